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

// A request no rule matches costs one header read (:path) and the pass-through counter: no
// clock, no shared data, no header written or removed. A cached user's hit reads the clock once.
func TestPassThroughReadsOnlyItsPath(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"tokenEndpoint":"https://kc.example.com/realms/demo/protocol/openid-connect/token",
		"clientId":"gateway","clientSecret":"test-secret","tokenExchange":{"enabled":true,"audience":"api"},
		"rules":[{"pathPrefix":"/api"}]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &benchHost{now: 1000}
	store := cachetest.NewEnvoyStore()
	w := NewWorker(h, cfg, store)
	store.ResetCounters()
	h.clock = 0
	hdr := &countingHeaders{mapHeaders: mapHeaders{":path": "/static/app.js", "x-user-oidc-token": userToken(2)}}
	if a := w.NewRequest(1).OnRequestHeaders(hdr); a != Continue || h.header != "" {
		t.Fatalf("a pass-through was %v with %q written", a, h.header)
	}
	if h.clock != 0 || store.Gets() != 0 || store.Sets() != 0 {
		t.Errorf("a pass-through read the clock %d times and shared data %d times (%d writes)", h.clock, store.Gets(), store.Sets())
	}
	if len(hdr.reads) != 1 || hdr.reads[0] != ":path" || hdr.changes != 0 {
		t.Errorf("a pass-through read %q and changed the headers %d times", hdr.reads, hdr.changes)
	}
	if _, ok := hdr.mapHeaders["x-user-oidc-token"]; !ok {
		t.Error("a pass-through removed the user token header")
	}

	hw, hh, hhdr := hitWorker(t)
	hh.clock, hh.header = 0, ""
	hhdr["x-user-oidc-token"] = userToken(7)
	if a := hw.NewRequest(9).OnRequestHeaders(hhdr); a != Continue || hh.header != "Bearer xtok-bench" {
		t.Fatalf("not a hit (%v, %q)", a, hh.header)
	}
	if hh.clock != 1 {
		t.Errorf("a memo hit read the clock %d times, want once", hh.clock)
	}
}

// countingHeaders records what a request reads and how often it changes the headers.
type countingHeaders struct {
	mapHeaders
	reads   []string
	changes int
}

func (c *countingHeaders) Get(name string) (string, bool) {
	c.reads = append(c.reads, name)
	return c.mapHeaders.Get(name)
}
func (c *countingHeaders) Remove(name string) { c.changes++; c.mapHeaders.Remove(name) }
