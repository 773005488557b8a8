package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/fleet"
	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// fleetRun sends requestsPerUser requests of each of users new users through lb (in front of
// the replicas) and returns the IdP's token exchanges per user.
func fleetRun(e *env, lb http.Handler, prefix string, users, requestsPerUser int) float64 {
	e.t.Helper()
	front := httptest.NewServer(lb)
	defer front.Close()
	tokens := make([]string, users)
	for i := range tokens {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if err := e.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			e.t.Fatal(err)
		}
		tokens[i] = e.userToken(name)
	}
	before := e.idp.TokenExchangeCount()
	for range requestsPerUser {
		for i, tok := range tokens {
			r := e.get(front.URL+"/api", tok)
			e.wantUserToken(r, fmt.Sprintf("%s-%d", prefix, i))
		}
	}
	return float64(e.idp.TokenExchangeCount()-before) / float64(users)
}

// A gateway of several Envoys (each its own shared data, so its own cache) costs the IdP one
// exchange per user per token lifetime per replica the user's requests reach: with round robin
// that is every replica, with consistent hashing on the user token header one, whatever the
// number of replicas. When a replica leaves, only its own users move.
func TestE2E_FleetConsistentHashingNeedsOneExchangePerUser(t *testing.T) {
	const replicas, users, requestsPerUser = 4, 25, 8 // 25: round robin moves each user along the replicas
	e := newEnv(t, envOptions{workers: 2, plugin: exchangeUnlimited})
	urls := []string{e.proxy.URL()}
	all := []*host.Host{e.proxy}
	for range replicas - 1 {
		px := e.replica()
		urls = append(urls, px.URL())
		all = append(all, px)
	}
	for _, px := range all {
		if _, err := px.WaitLog(10*time.Second, func(l host.Log) bool {
			return strings.Contains(l.Message, "service-account token") && strings.Contains(l.Message, "fetched")
		}); err != nil {
			t.Fatalf("a replica has no service-account token: %v", err)
		}
	}
	rr := fleetRun(e, fleet.RoundRobin(urls), "rr-user", users, requestsPerUser)
	hash := fleetRun(e, fleet.ConsistentHash(urls, "x-user-oidc-token"), "hash-user", users, requestsPerUser)
	t.Logf("%d replicas: %.2f exchanges per user with round robin, %.2f with consistent hashing", replicas, rr, hash)
	if rr != replicas {
		t.Errorf("round robin: %.2f exchanges per user, want %d (one per replica)", rr, replicas)
	}
	if hash != 1 {
		t.Errorf("consistent hashing: %.2f exchanges per user, want 1", hash)
	}
	keys := make([]string, 4000) // header values shaped like the users' tokens
	for i := range keys {
		keys[i] = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLSI" + fmt.Sprint(i) + ".c2lnbmF0dXJl"
	}
	share, only := fleet.Remapped(replicas, replicas-1, keys)
	t.Logf("one of %d replicas leaving moves %.1f%% of the users", replicas, 100*share)
	if !only || share > 0.4 {
		t.Errorf("a replica leaving moved %.2f of the users (only its own: %v), want about 1/%d and only its own", share, only, replicas)
	}
}
