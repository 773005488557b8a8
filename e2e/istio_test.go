package e2e

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// Istio: vm_id "" and two WasmPlugins (same image) sharing one VM per thread, one per API.
// Each configuration gets tokens for its own audience, a user's token for one API is never
// used for the other, and both cache on their own. Then another plugin overwrites every key
// in the shared data they all see: no request gets a wrong token, the module never traps.
func TestE2E_TwoConfigurationsShareOneVM(t *testing.T) {
	const otherAudience = "reports-api"
	e := newEnv(t, envOptions{workers: 2, istio: true,
		plugins: []string{`"tokenExchange":{"enabled":true,"audience":"` + otherAudience + `"}`},
		beforeProxy: func(p *idp.IdP) {
			c, _ := p.Client(filterClient)
			c.Audiences = []string{apiAudience, otherAudience}
			// Keycloak names audiences by client: the API needs a client of its own.
			if err := errors.Join(p.SetClient(c), p.SetClient(idp.Client{ID: otherAudience, Secret: "s", Confidential: true})); err != nil {
				t.Fatal(err)
			}
		}})
	e.idp.AddUser(idp.User{Username: "alice", Password: "pw"})
	alice := e.userToken("alice")
	other := e.proxy.PluginURL(0)

	check := func(r reply, audience string) {
		t.Helper()
		if r.status != http.StatusOK || r.claim("sub") != e.idp.Subject("alice") {
			t.Fatalf("status %d sub %q, want alice's token", r.status, r.claim("sub"))
		}
		if aud := r.audiences(); len(aud) != 1 || aud[0] != audience {
			t.Fatalf("token aud %v, want exactly [%s]", aud, audience)
		}
	}
	for round := 0; round < 3; round++ {
		check(e.get("/a", alice), apiAudience)
		check(e.get(other+"/b", alice), otherAudience)
	}
	if n := e.idp.TokenExchangeCount(); n != 2 {
		t.Errorf("%d exchanges for one user on two APIs over three rounds, want 2 (one per API, then cached)", n)
	}

	// A neighbour with vm_id "" writes garbage into every key, ours included.
	for key := range e.proxy.SharedDataSnapshot() {
		e.proxy.SetSharedData("", key, bytes.Repeat([]byte{0xff}, 40))
	}
	for round := 0; round < 3; round++ {
		check(e.get("/a", alice), apiAudience)
		check(e.get(other+"/b", alice), otherAudience)
	}
}
