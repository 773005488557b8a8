package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/kagenti/token-exchange-filter/e2e/fleet"
)

// The fleet phase: fleetReplicas proxies (each one Envoy with its own shared data, 2 workers)
// behind a load balancer, round robin and then consistent hashing on the user token header;
// fleetUsers new users each send fleetRequests requests within one token lifetime.
const (
	fleetReplicas = 8
	fleetUsers    = 101 // not a multiple of the replicas: round robin moves each user along them
	fleetRequests = 12
)

func (b *bench) fleet(res *Result) error {
	var urls []string
	for range fleetReplicas {
		px, err := b.launch(b.proxyConfig(2, false))
		if err != nil {
			return err
		}
		defer px.Close()
		urls = append(urls, px.URL())
	}
	rr, err := b.fleetRun(fleet.RoundRobin(urls))
	if err != nil {
		return err
	}
	hash, err := b.fleetRun(fleet.ConsistentHash(urls, "x-user-oidc-token"))
	if err != nil {
		return err
	}
	keys := make([]string, 20000)
	for i := range keys {
		keys[i] = fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.user-%d.c2lnbmF0dXJl", i)
	}
	share, _ := fleet.Remapped(fleetReplicas, fleetReplicas-1, keys)
	res.FleetReplicas, res.FleetUsers = fleetReplicas, fleetUsers
	res.FleetExchangesPerUserRR, res.FleetExchangesPerUserHash = rr, hash
	res.FleetRemappedShare = float64(int(share*1000+0.5)) / 1000
	res.Notes["fleet"] = fmt.Sprintf("%d proxies (e2e/host, each with its own shared data, 2 workers) behind a load balancer "+
		"(e2e/fleet): round robin, then consistent hashing on x-user-oidc-token (Envoy's ring hash: xxHash64, %d points "+
		"per proxy). %d new users each send %d requests, well within one token lifetime; exchanges at the IdP per user. "+
		"fleet_remapped_share: users (20000 header values) whose proxy changes when one of the %d leaves (ideal 1/%d).",
		fleetReplicas, fleet.PointsPerBackend, fleetUsers, fleetRequests, fleetReplicas, fleetReplicas)
	return nil
}

func (b *bench) fleetRun(lb http.Handler) (float64, error) {
	front := httptest.NewServer(lb)
	defer front.Close()
	_, tokens, err := b.newUsers(fleetUsers)
	if err != nil {
		return 0, err
	}
	before := b.idp.TokenExchangeCount()
	for range fleetRequests {
		for _, tok := range tokens {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, front.URL+"/api", nil)
			req.Header.Set("x-user-oidc-token", tok)
			resp, err := b.client.Do(req)
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("fleet: status %d", resp.StatusCode)
			}
		}
	}
	return float64(b.idp.TokenExchangeCount()-before) / fleetUsers, nil
}
