package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// A user token whose exp has passed is not sent to the IdP (Keycloak would only say "Invalid
// token"): the service-account token at once, or 401 in strict mode.
func TestE2E_ExpiredUserTokenNeverReachesTheIdP(t *testing.T) {
	for _, strict := range []bool{false, true} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			plugin := exchangeOn
			if strict {
				plugin += `,"fallbackToServiceAccount":false`
			}
			e := newEnv(t, envOptions{plugin: plugin})
			if !strict {
				e.serviceTokenReady()
			}
			expired, err := e.idp.MintUserTokenWith("alice", uiClient, idp.MintOptions{Lifetime: -time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			e.remember(expired)
			r := e.get("/api", expired)
			if strict {
				e.wantLocalReply(r, http.StatusUnauthorized, "invalid_token")
			} else {
				e.wantServiceToken(r)
				if n, _ := e.proxy.Metric("token_exchange.fallback.expired_user_token"); n != 1 {
					t.Errorf("fallback.expired_user_token = %d, want 1", n)
				}
			}
			if n := e.idp.TokenExchangeCount(); n != 0 {
				t.Fatalf("%d exchanges of an expired user token, want 0", n)
			}
		})
	}
}

// A cached exchanged token is never used past the user token's own exp, though it is valid
// longer itself.
func TestE2E_CachedTokenNotUsedPastUserTokenExp(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2})
	e.serviceTokenReady()
	short, err := e.idp.MintUserTokenWith("alice", uiClient, idp.MintOptions{Lifetime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.remember(short)
	e.wantUserToken(e.get("/api", short), "alice")
	e.wantUserToken(e.get("/api", short), "alice") // the other worker: from the cache
	// Poll until the user token's exp has passed (the exchanged token still has ~5 minutes).
	deadline := time.Now().Add(10 * time.Second)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for range poll.C {
		r := e.get("/api", short)
		if r.claim("sub") != e.idp.Subject("alice") {
			e.wantServiceToken(r)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exchanged token was still used 10 s after the user token's exp")
		}
	}
	if n := e.idp.TokenExchangeCount(); n != 1 {
		t.Errorf("%d exchanges, want 1", n)
	}
}

// A requested audience the realm does not map to the filter's client fails every user alike:
// a configuration failure with its metric and a warning naming the Keycloak setting.
func TestE2E_UnmappedAudienceIsAConfigurationFailure(t *testing.T) {
	e := newEnv(t, envOptions{plugin: `"tokenExchange":{"enabled":true,"audience":"` + uiClient + `"}`})
	e.serviceTokenReady()
	e.wantServiceToken(e.get("/api", e.userToken("alice")))
	if n, _ := e.proxy.Metric("token_exchange.exchange.failure.configuration"); n != 1 {
		t.Errorf("exchange.failure.configuration = %d, want 1", n)
	}
	if _, err := e.proxy.WaitLog(5*time.Second, func(l host.Log) bool {
		return strings.Contains(l.Message, "Requested audience not available") && strings.Contains(l.Message, "Audience mapper")
	}); err != nil {
		t.Error("no warning naming the Keycloak setting (an Audience mapper)")
	}
}

// Many different users refused in a row as "Invalid token" (here: all logged out) get the
// likely cause logged once.
func TestE2E_ManyInvalidTokensExplainedOnce(t *testing.T) {
	e := newEnv(t, envOptions{workers: 1})
	e.serviceTokenReady()
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("gone-%d", i)
		if err := e.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		tok := e.userToken(name)
		e.idp.Logout(name)
		e.wantServiceToken(e.get("/api", tok))
	}
	explained := 0
	for _, l := range e.proxy.Logs() {
		if strings.Contains(l.Message, "different user tokens in a row") && strings.Contains(l.Message, "issuer") {
			explained++
		}
	}
	if explained != 1 {
		t.Errorf("the likely cause was logged %d times, want once", explained)
	}
}

// Hostile traffic: 1,000 requests with made-up user tokens (random strings, JWT-shaped garbage,
// and forged JWTs with the right issuer and a future exp, which only Keycloak can tell apart)
// between the requests of real users. The local checks refuse the first two kinds without a
// callout; the new-key bucket bounds the third; real users keep their cached tokens.
func TestE2E_GarbageTokensCannotStormTheIdP(t *testing.T) {
	const burst, rate = 20, 1
	e := newEnv(t, envOptions{workers: 2, pluginFor: func(issuer string) string {
		return exchangeOn[:len(exchangeOn)-1] +
			fmt.Sprintf(`,"expectedIssuer":%q,"newKeyExchangeBurst":%d,"newKeyExchangesPerSecond":%d}`, issuer, burst, rate)
	}})
	e.serviceTokenReady()
	users := []string{"alice", "bob"}
	tokens := map[string]string{}
	for _, u := range users {
		tokens[u] = e.userToken(u)
		e.wantUserToken(e.get("/api", tokens[u]), u)
	}
	start := time.Now()
	realHits, realRequests := 0, 0
	for i := 0; i < 1000; i++ {
		var garbage string
		switch i % 3 {
		case 0:
			garbage = fmt.Sprintf("not-a-jwt-%d", i)
		case 1:
			garbage = "eyJhbGciOiJSUzI1NiJ9.bm90LWpzb24." + fmt.Sprint(i)
		default:
			forged, err := e.idp.SignClaims(map[string]any{"iss": e.idp.Issuer(), "sub": fmt.Sprint("nobody-", i),
				"exp": time.Now().Add(time.Hour).Unix(), "aud": filterClient, "typ": "Bearer"})
			if err != nil {
				t.Fatal(err)
			}
			garbage = forged
		}
		e.remember(garbage)
		if r := e.get("/api", garbage); r.status != http.StatusOK || r.claim("sub") == e.idp.Subject("alice") || r.claim("sub") == e.idp.Subject("bob") {
			t.Fatalf("garbage request %d: status %d sub %q", i, r.status, r.claim("sub"))
		}
		if i%10 == 0 {
			u := users[(i/10)%2]
			r := e.get("/api", tokens[u])
			realRequests++
			if r.claim("sub") == e.idp.Subject(u) {
				realHits++
			}
		}
	}
	exchanges := e.idp.TokenExchangeCount() - len(users)
	limit := burst + rate*int(time.Since(start).Seconds()+1)
	t.Logf("1,000 garbage requests in %v: %d exchanges (bucket bound %d); real users served their own token %d/%d",
		time.Since(start).Round(time.Millisecond), exchanges, limit, realHits, realRequests)
	if exchanges > limit {
		t.Errorf("%d exchanges for 1,000 garbage requests, want at most %d", exchanges, limit)
	}
	if realHits != realRequests {
		t.Errorf("real users got their token %d/%d times during the flood", realHits, realRequests)
	}
	if n := e.idp.TokenExchangeCountFor(e.idp.Subject("alice")); n != 1 {
		t.Errorf("alice was exchanged %d times, want 1 (her cached token survived)", n)
	}
}

// A wall-clock step of minutes changes nothing the workers coordinate on: with the wall clock 5
// minutes back, a cached token still expires on time (its life runs on the monotonic clock), and
// 5 minutes ahead nothing is blocked or expired early (only a JWT's own exp reads the wall clock,
// and these tokens live longer than the step).
func TestE2E_WallClockStepsChangeNothing(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2, plugin: exchangeOn + `,"expirySkewSeconds":0`})
	e.serviceTokenReady()
	e.idp.SetAccessTokenLifetime(2 * time.Second) // exchanged tokens: 2 s
	alice, err := e.idp.MintUserTokenWith("alice", uiClient, idp.MintOptions{Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.remember(alice)
	e.wantUserToken(e.get("/api", alice), "alice")
	e.proxy.StepWallClock(-5 * time.Minute)
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for range poll.C {
		e.wantUserToken(e.get("/api", alice), "alice")
		if e.idp.TokenExchangeCount() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("with the wall clock 5 minutes back, a 2-second token was still used after 10 s")
		}
	}
	e.proxy.StepWallClock(10 * time.Minute) // now 5 minutes ahead
	before := e.idp.TokenExchangeCount()
	for i := 0; i < 5; i++ {
		e.wantUserToken(e.get("/api", alice), "alice")
	}
	if n := e.idp.TokenExchangeCount() - before; n > 1 {
		t.Errorf("%d exchanges for 5 requests within a token's 2 s after the wall clock jumped ahead", n)
	}
}

// A spelling of a path that routes like a rule's own does not slip past the rule (where the
// previous module passed it through untouched, the user's token in its header included).
func TestE2E_RulesCannotBeSlippedPast(t *testing.T) {
	e := newEnv(t, envOptions{plugin: `"rules":[{"pathPrefix":"/agents","enabled":true,"audience":"kagenti-api"}]`})
	e.serviceTokenReady()
	alice := e.userToken("alice")
	for _, path := range []string{"/agents/run", "//agents/run", "/x/../agents/run", "/%61gents/run", "/./agents"} {
		r := e.get(path, alice)
		e.wantUserToken(r, "alice") // also: the user token header did not go upstream
	}
}
