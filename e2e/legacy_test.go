package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// On an Envoy whose proxy-wasm-cpp-host predates 94091cd (its smaller WASI list, poll_oneoff
// ENOSYS and forbidden inside the allocator) the module loads and serves users with large
// tokens, many garbage collections' worth, without a trap. It fails if the module ever imports
// what that host lacks, or calls poll_oneoff on a path the runtime patch does not cover. Note
// that the filter starts no timer, so even an unpatched runtime does not reach poll_oneoff
// here: TestE2E_GCPressureNeedsTheRuntimePatch arms one to show the trap and the patch's fix.
func TestE2E_LegacyEnvoyServesWithoutTrap(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2, legacyHost: true, plugin: exchangeUnlimited})
	e.serviceTokenReady()
	padding := strings.Repeat("x", 4000)
	for i := 0; i < 300; i++ {
		name := fmt.Sprintf("legacy-user-%d", i)
		if err := e.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		tok, err := e.idp.MintUserTokenWith(name, uiClient, idp.MintOptions{Claims: map[string]any{"padding": padding}})
		if err != nil {
			t.Fatal(err)
		}
		e.remember(tok)
		e.wantUserToken(e.get("/api", tok), name)
	}
	if n := e.proxy.PollOneoffCalls(); n != 0 {
		t.Errorf("the module called poll_oneoff %d times", n)
	}
	// newEnv's cleanup fails the test on any trap the host reported.
}
