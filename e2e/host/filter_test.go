package host

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// fakeIdP is a loopback token endpoint: client credentials give "sa-token", an exchange of
// subject S gives "x-S". Exchanges wait until gate is closed.
type fakeIdP struct {
	addr      string
	gate      chan struct{}
	mu        sync.Mutex
	exchanges []string
}

func newFakeIdP(t *testing.T) *fakeIdP {
	idp := &fakeIdP{gate: make(chan struct{})}
	idp.addr = newLoopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.URL.Path != "/token" {
			http.Error(w, `{"error":"invalid_request"}`, 400)
			return
		}
		token := "sa-token"
		if r.Form.Get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange" {
			idp.mu.Lock()
			idp.exchanges = append(idp.exchanges, r.Form.Get("subject_token")+"@"+r.Form.Get("audience"))
			idp.mu.Unlock()
			select {
			case <-idp.gate:
			case <-r.Context().Done():
				return
			}
			token = "x-" + r.Form.Get("subject_token")
		}
		w.Header().Set("content-type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 300,
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
	})
	return idp
}

func (idp *fakeIdP) seen() []string {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return append([]string(nil), idp.exchanges...)
}

func startFilter(t *testing.T, idp *fakeIdP, up *upstream, conf string) *Host {
	return start(t, Config{Module: realFilter(t), Workers: 2, VMID: "token-exchange", RootID: "token-exchange",
		PluginName: "token-exchange", PluginConfig: []byte(conf), UpstreamCluster: "api",
		Clusters: map[string]string{"idp": idp.addr, "api": up.addr}})
}

// The real filter end to end: a request with a user token is held while the filter exchanges
// it through a callout dispatched from its root context, then resumed upstream with the
// exchanged token; the next request with that token, on the other worker, uses the cache in
// shared data without a callout.
// user1 is a user token as the filter accepts it by default: JWT-shaped (never verified).
const user1 = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyMSJ9.sig"

func TestRealFilterExchange(t *testing.T) {
	idp, up := newFakeIdP(t), newUpstream(t, echo)
	h := startFilter(t, idp, up, `{"tokenEndpoint":"http://idp.example/token","cluster":"idp","clientId":"filter",
		"clientSecret":"s3cret","timeoutMs":60000,"tokenExchange":{"enabled":true,"audience":"api"}}`)
	answer := make(chan reply, 1)
	go func() {
		r, err := doErr(context.Background(), h, "GET", "/things", map[string]string{"x-user-oidc-token": user1}, nil)
		if err != nil {
			t.Error(err)
		}
		answer <- r
	}()
	if err := h.WaitFor(wait, func() bool { return len(idp.seen()) == 1 }); err != nil {
		t.Fatalf("no exchange reached the IdP: %v", err)
	}
	if n := len(up.seen()); n != 0 {
		t.Fatalf("the request went upstream before its exchange finished (%d)", n)
	}
	close(idp.gate)
	r := <-answer
	if r.status != 200 {
		t.Fatalf("answer %+v", r)
	}
	r2 := do(t, h, "GET", "/more", map[string]string{"x-user-oidc-token": user1}, nil)
	if r2.status != 200 {
		t.Fatalf("second answer %+v", r2)
	}
	for i, s := range up.seen() {
		if got := s.header.Get("authorization"); got != "Bearer x-"+user1 || s.header.Get("x-user-oidc-token") != "" {
			t.Errorf("request %d went upstream with authorization %q, user token header %q", i, got, s.header.Get("x-user-oidc-token"))
		}
	}
	if got := idp.seen(); len(got) != 1 || got[0] != user1+"@api" {
		t.Errorf("exchanges at the IdP: %v, want one for user1 at api", got)
	}
	if h.Callouts("idp") < 1 || h.Callouts("api") != 0 {
		t.Errorf("callouts: %d to idp, %d to api", h.Callouts("idp"), h.Callouts("api"))
	}
	if h.SharedDataKeys() == 0 {
		t.Error("nothing was cached in shared data")
	}
}

// Strict mode without a user token: the filter answers 401 with a local reply; nothing goes
// upstream.
func TestRealFilterLocalReply(t *testing.T) {
	idp, up := newFakeIdP(t), newUpstream(t, echo)
	h := startFilter(t, idp, up, `{"tokenEndpoint":"http://idp.example/token","cluster":"idp","clientId":"filter",
		"clientSecret":"s3cret","fallbackToServiceAccount":false,"tokenExchange":{"enabled":true}}`)
	r := do(t, h, "GET", "/things", nil, nil)
	if r.status != 401 || !strings.Contains(r.body, `"error"`) || r.header.Get("www-authenticate") == "" {
		t.Errorf("answer %+v", r)
	}
	if len(up.seen()) != 0 {
		t.Error("the request went upstream")
	}
}
