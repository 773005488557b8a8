package coord

import (
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

// A memo hit whose token has less than minLifetimeSeconds left waits for a fresh one; once it
// comes, the fresh token is filed in the memo for the same user, so that the user's next request
// is a memo hit with it (not a shared-data read, nor a second wait).
func TestAFreshTokenAHitWaitedForIsFiledForItsUser(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"tokenEndpoint":"https://kc.example.com/realms/demo/protocol/openid-connect/token",
		"clientId":"gateway","clientSecret":"test-secret","refreshAheadSeconds":0,"minLifetimeSeconds":120,
		"tokenExchange":{"enabled":true,"audience":"api"}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &benchHost{now: 1000}
	store := cachetest.NewEnvoyStore()
	w := NewWorker(h, cfg, store)
	tok := userToken(5)
	send := func(id uint32) Action {
		return w.NewRequest(id).OnRequestHeaders(mapHeaders{"x-user-oidc-token": tok})
	}
	if a := send(1); a != Pause || h.pending == nil {
		t.Fatalf("the first request was not held for an exchange (%v)", a)
	}
	h.pending(Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"xtok-old","expires_in":300}`)})
	if h.header != "Bearer xtok-old" {
		t.Fatalf("the first request got %q", h.header)
	}

	// 100 s left of the cached token: the memo hit waits for a fresh one.
	h.now += 200_000
	h.pending, h.header = nil, ""
	if a := send(2); a != Pause || h.pending == nil {
		t.Fatalf("a hit with less than minLifetimeSeconds left was not held for a refresh (%v)", a)
	}
	h.pending(Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"xtok-fresh","expires_in":300}`)})
	if h.header != "Bearer xtok-fresh" {
		t.Fatalf("the waiting request got %q, want the fresh token", h.header)
	}
	e, ok := w.memo.entries[memoKey{userToken: tok, audience: "api"}.slot()]
	if !ok || e.bearer != "Bearer xtok-fresh" || e.userToken != tok {
		t.Fatal("the fresh token is not in the memo under the user's token")
	}
	store.ResetCounters()
	h.pending, h.header = nil, ""
	if a := send(3); a != Continue || h.header != "Bearer xtok-fresh" || h.pending != nil {
		t.Fatalf("the next request was not a hit with the fresh token (%v, %q)", a, h.header)
	}
	if got := store.Gets(); got > 1 {
		t.Errorf("the next request read shared data %d times: a memo hit reads only the generation word", got)
	}
}

// The memo's map is keyed by a one-word summary; what a hit answers is decided by the whole key:
// the same user token filed for another audience or scope (or under a summary that collides) is
// a miss.
func TestMemoAnswersOnlyItsOwnAudienceAndScope(t *testing.T) {
	tok := userToken(3)
	var m memo
	m.put(memoKey{tok, "api", ""}, &memoEntry{bearer: "Bearer for-api", untilMs: 1 << 40})
	if _, ok := m.get(memoKey{tok, "api", ""}, 0, 0); !ok {
		t.Fatal("the entry does not answer its own key")
	}
	for _, k := range []memoKey{{tok, "other", ""}, {tok, "api", "openid"}, {tok, "ap", "i"}, {tok[:len(tok)-1], "api", ""}} {
		if k.slot() == (memoKey{tok, "api", ""}).slot() {
			t.Errorf("%q/%q: the summary does not tell it apart", k.audience, k.scope)
		}
		// Filed under the other key's summary, as a collision would: still not its answer.
		m.entries[k.slot()] = m.entries[(memoKey{tok, "api", ""}).slot()]
		if e, ok := m.get(k, 0, 0); ok {
			t.Fatalf("audience %q, scope %q got the entry for audience api: %q", k.audience, k.scope, e.bearer)
		}
		delete(m.entries, k.slot())
	}
}
