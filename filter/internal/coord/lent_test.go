package coord

import (
	"testing"
	"unsafe"
)

// lentHeaders answers Get as the wasm build does: with memory lent for the callback, which
// wipe overwrites once the callback has returned (plugin/lend.go wipes its scratch).
type lentHeaders struct {
	mapHeaders
	lent [][]byte
}

func (l *lentHeaders) Get(name string) (string, bool) {
	v, ok := l.mapHeaders.Get(name)
	if !ok || v == "" {
		return v, ok
	}
	b := []byte(v)
	l.lent = append(l.lent, b)
	return unsafe.String(&b[0], len(b)), true
}

func (l *lentHeaders) wipe() {
	for _, b := range l.lent {
		for i := range b {
			b[i] = '#'
		}
	}
	l.lent = nil
}

// The request headers' values are lent for the callback only: whatever the coordinator keeps
// past it (the user token in the memo, in a held request, in the key an upstream 401 forgets)
// must be its own copy. Without the copies, the memo files the user's exchanged token under a
// wiped token and the next request misses it, and a 401 forgets nothing.
func TestHeaderValuesAreNotKeptPastTheirCallback(t *testing.T) {
	w, h := exchangeWorker(t)
	tok := userToken(9)
	key := memoKey{userToken: tok, audience: "api"}
	send := func(id uint32) (*Request, Action) {
		hdr := &lentHeaders{mapHeaders: mapHeaders{":path": "/", "x-user-oidc-token": tok}}
		req := w.NewRequest(id)
		a := req.OnRequestHeaders(hdr)
		hdr.wipe()
		return req, a
	}

	// A miss, held for its exchange; a second request of the same user joins it.
	if _, a := send(1); a != Pause || h.pending == nil {
		t.Fatalf("the first request was not held for an exchange (%v)", a)
	}
	if _, a := send(2); a != Pause {
		t.Fatalf("the second request was not held (%v)", a)
	}
	h.pending(Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"xtok-lent","expires_in":300}`)})
	if h.upstream != 2 || h.header != "Bearer xtok-lent" {
		t.Fatalf("after the exchange: %d requests resumed, the last with %q", h.upstream, h.header)
	}
	if e, ok := w.memo.entries[key.slot()]; !ok || e.userToken != tok {
		t.Fatal("the memo does not hold the exchanged token under the user's token")
	}

	// A memo hit; the upstream refuses the token a while later: the memo forgets it.
	h.now += Drop401MinAgeMs + 1
	h.header = ""
	req, a := send(3)
	if a != Continue || h.header != "Bearer xtok-lent" {
		t.Fatalf("the third request was not a hit (%v, %q)", a, h.header)
	}
	req.OnResponseHeaders(func() (string, bool) { return "401", true })
	if _, ok := w.memo.entries[key.slot()]; ok {
		t.Fatal("an upstream 401 on a memo hit left the token in the memo")
	}
}
