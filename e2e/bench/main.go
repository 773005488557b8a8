// Command bench measures the compiled token-exchange filter end to end: the module runs in the
// Envoy-faithful host (e2e/host) with 4 workers, in front of the echo upstream (e2e/upstream),
// exchanging tokens at the Keycloak-shaped IdP (e2e/idp), all on loopback. It writes
// build/bench.json and prints the same as a table. `make bench` runs it; it is not part of
// `make test`.
//
//	go run ./e2e/bench [-wasm build/plugin.wasm] [-out build/bench.json]
//
// Environment (flags of the same meaning win):
//
//	TOKEN_EXCHANGE_WASM  the module (default: a fresh build of ./filter)
//	BENCH_USERS          distinct users of the memory phase (default 100000)
//	BENCH_OUTAGE         length of the IdP outage (default 10s)
//	BENCH_KEY_BITS       RSA key size of the IdP (default 1024, see below)
//	BENCH_ONLY           "module", "refresh", "fleet" or "users": only that phase
//
// What is measured (see the notes field of the output, which says the same):
//
//   - burst: 1000 concurrent requests from 100 users whose tokens are not cached yet; exchanges
//     counted at the IdP. The goal is one exchange per user per Envoy (burst_exchanges ==
//     burst_users).
//   - release: for each request of the burst that was sent before the IdP answered the exchange
//     whose token it carried, the time from that answer (the IdP's response hook, run as the
//     answer is written) to the request reaching the upstream (the upstream's receive time).
//   - hit / passthrough: the module's own time per request (host.StreamModuleTime: every call into
//     the module for that request's context), requests sent one at a time, in alternating batches
//     of the two kinds. Passthrough is, until per-route rules exist, the cheapest path that
//     exists: no user token, the service-account token cached.
//   - outage: 20 users with uncached tokens each send a request every 50 ms while the IdP is
//     stopped; callouts to the IdP cluster during the outage divided by the 20 keys.
//   - users: BENCH_USERS distinct users through a fresh host (each one exchange); shared-data
//     bytes at the end, and the largest worker VM's memory pages after 1,000 users and at the end.
//
// The IdP signs every token with RSA (RS256), and the memory phase needs two signatures per user
// (the user's token, then the exchanged one). With Keycloak's 2048-bit keys that is ~1.4 ms each
// on one core, ~5 minutes for 100,000 users on 2 cores; with 1024-bit keys ~0.5 ms. The default is
// therefore 1024 bits; tokens are then 171 characters shorter than with 2048-bit keys (the
// signature), which the output records (idp_key_bits, exchanged_token_bytes).
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

const (
	workers       = 4
	burstUsers    = 100
	burstRequests = 1000
	outageUsers   = 20
	outageEvery   = 50 * time.Millisecond
	pagesAtUsers  = 1000
	uiClient      = idp.UIClientID
	filterClient  = idp.FilterClientID
	apiAudience   = idp.APIClientID
	// readmeBound is the README's bound for the default 1024 slots (cache.SharedBytesBound(1024,
	// len(namespace)) with the namespace of a default configuration).
	readmeBound = 33_725_071 // keep in step with README and cache.TestSharedBytesBoundValue
	slots       = 1024       // the default cacheSlots: the configuration below leaves it unset
)

// Result is build/bench.json.
type Result struct {
	BurstRequests  int `json:"burst_requests"`
	BurstUsers     int `json:"burst_users"`
	BurstWorkers   int `json:"burst_workers"`
	BurstExchanges int `json:"burst_exchanges"`
	BurstErrors    int `json:"burst_errors"`

	HitNsPerReq         int64 `json:"hit_ns_per_req"`
	PassthroughNsPerReq int64 `json:"passthrough_ns_per_req"`
	// FloorNsPerReq is the floor filter's time for the same request (e2e/bench/floor); the
	// ratios are the hit's over pass-through and over the floor (goals 2.0 and 1.25).
	FloorNsPerReq      int64   `json:"floor_ns_per_req"`
	HitOverPassthrough float64 `json:"hit_over_passthrough"`
	HitOverFloor       float64 `json:"hit_over_floor"`
	HitRequests        int     `json:"hit_requests"`
	// [min, max] over the rounds of the per-round figures.
	HitNsMinMax              [2]float64       `json:"hit_ns_min_max"`
	PassthroughNsMinMax      [2]float64       `json:"passthrough_ns_min_max"`
	FloorNsMinMax            [2]float64       `json:"floor_ns_min_max"`
	HitOverPassthroughMinMax [2]float64       `json:"hit_over_passthrough_min_max"`
	HitOverFloorMinMax       [2]float64       `json:"hit_over_floor_min_max"`
	ModuleTimeRounds         int              `json:"module_time_rounds"`
	ModuleTimeEngine         string           `json:"module_time_engine"`
	FloorNsByCallback        map[string]int64 `json:"floor_ns_by_callback"`
	// The same three kinds in V8 (e2e/bench/v8/host.mjs under node), when node is installed.
	// RoundsNs is every round's ns per request, by engine and kind ("wazero hit", "v8 floor", ...).
	RoundsNs                   map[string][]int64 `json:"module_time_rounds_ns"`
	V8Engine                   string             `json:"v8_engine,omitempty"`
	V8HitNsPerReq              int64              `json:"v8_hit_ns_per_req,omitempty"`
	V8PassthroughNsPerReq      int64              `json:"v8_passthrough_ns_per_req,omitempty"`
	V8FloorNsPerReq            int64              `json:"v8_floor_ns_per_req,omitempty"`
	V8HitOverPassthrough       float64            `json:"v8_hit_over_passthrough,omitempty"`
	V8HitOverFloor             float64            `json:"v8_hit_over_floor,omitempty"`
	V8HitOverPassthroughMinMax [2]float64         `json:"v8_hit_over_passthrough_min_max"`
	V8HitOverFloorMinMax       [2]float64         `json:"v8_hit_over_floor_min_max"`
	V8HitNsByCallback          map[string]int64   `json:"v8_hit_ns_by_callback,omitempty"`
	V8PassthroughNsByCallback  map[string]int64   `json:"v8_passthrough_ns_by_callback,omitempty"`
	V8FloorNsByCallback        map[string]int64   `json:"v8_floor_ns_by_callback,omitempty"`
	// Per callback (export name), ns per request.
	HitNsByCallback         map[string]int64 `json:"hit_ns_by_callback"`
	PassthroughNsByCallback map[string]int64 `json:"passthrough_ns_by_callback"`
	PassthroughRequests     int              `json:"passthrough_requests"`

	Users                int     `json:"users"`
	UsersSharedBytes     int     `json:"users_100k_shared_bytes"`
	SharedKeys           int     `json:"shared_keys"`
	SharedBytesBound     int     `json:"shared_bytes_bound"`
	SharedBytesBoundOK   bool    `json:"shared_bytes_within_bound"`
	VMPagesBefore        int     `json:"vm_pages_before"`
	VMPagesAfter         int     `json:"vm_pages_after"`
	UsersErrors          int     `json:"users_errors"`
	UsersSeconds         int64   `json:"users_seconds"`
	ExchangedTokenBytes  int     `json:"exchanged_token_bytes"`
	IdPKeyBits           int     `json:"idp_key_bits"`
	ReleaseP50Us         int64   `json:"release_p50_us"`
	ReleaseP99Us         int64   `json:"release_p99_us"`
	ReleaseSamples       int     `json:"release_samples"`
	BurstReleaseP50Us    int64   `json:"burst_release_p50_us"`
	BurstReleaseP99Us    int64   `json:"burst_release_p99_us"`
	BurstReleaseSamples  int     `json:"burst_release_samples"`
	OutageCalloutsPerKey float64 `json:"outage_callouts_per_key"`
	OutageSeconds        float64 `json:"outage_seconds"`
	OutageKeys           int     `json:"outage_keys"`
	OutageRequests       int     `json:"outage_requests"`
	ModuleBytes          int     `json:"module_bytes"`

	// The refresh phase (refresh.go).
	RefreshUsers                       int     `json:"refresh_users"`
	RefreshHeldPerUser                 float64 `json:"refresh_held_per_user"`
	RefreshHeldPerUserOff              float64 `json:"refresh_held_per_user_off"`
	RefreshExchangesPerUserPerLifetime float64 `json:"refresh_exchanges_per_user_per_lifetime"`
	RefreshExpectedPerLifetime         float64 `json:"refresh_expected_per_user_per_lifetime"`
	RefreshP50Us                       int64   `json:"refresh_p50_us"`
	RefreshP99Us                       int64   `json:"refresh_p99_us"`
	RefreshHitP99Us                    int64   `json:"refresh_hit_p99_us"`
	RefreshOffP99Us                    int64   `json:"refresh_off_p99_us"`

	// The fleet phase (fleet.go).
	FleetReplicas             int     `json:"fleet_replicas"`
	FleetUsers                int     `json:"fleet_users"`
	FleetExchangesPerUserRR   float64 `json:"fleet_exchanges_per_user_rr"`
	FleetExchangesPerUserHash float64 `json:"fleet_exchanges_per_user_hash"`
	FleetRemappedShare        float64 `json:"fleet_remapped_share"`

	Notes map[string]string `json:"notes"`
}

func main() {
	wasmPath := flag.String("wasm", os.Getenv(wasmbuild.EnvVar), "the compiled filter (default: $TOKEN_EXCHANGE_WASM, else a fresh build)")
	out := flag.String("out", filepath.Join(wasmbuild.RepoRoot(), "build", "bench.json"), "where to write the JSON result")
	users := flag.Int("users", envInt("BENCH_USERS", 100_000), "distinct users of the memory phase")
	outage := flag.Duration("outage", envDuration("BENCH_OUTAGE", 10*time.Second), "length of the IdP outage")
	keyBits := flag.Int("key-bits", envInt("BENCH_KEY_BITS", 1024), "RSA key size of the IdP")
	only := flag.String("only", os.Getenv("BENCH_ONLY"), "run one phase only: module (module time), refresh, fleet, users, or \"\" for all")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (the host functions by name; wazero's compiled module code shows as addresses)")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	slog.SetDefault(slog.New(slog.DiscardHandler)) // the OIDC library logs its routes
	if *users < pagesAtUsers {
		fail(fmt.Errorf("-users must be at least %d", pagesAtUsers))
	}
	var module []byte
	var err error
	if *wasmPath != "" {
		module, err = os.ReadFile(*wasmPath)
	} else {
		module, err = wasmbuild.Module()
	}
	if err != nil {
		fail(err)
	}
	res, err := run(module, *users, *outage, *keyBits, *only)
	if err != nil {
		fail(err)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fail(err)
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fail(err)
	}
	printTable(os.Stdout, res)
	fmt.Printf("\nwritten to %s\n", *out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
		if err != nil {
			fail(fmt.Errorf("%s: %v", name, err))
		}
		return n
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fail(fmt.Errorf("%s: %v", name, err))
		}
		return d
	}
	return def
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// bench is the IdP and upstream shared by every phase, and the proxy of the current phase.
type bench struct {
	module []byte
	idp    *idp.IdP
	up     *upstream.Upstream
	proxy  *host.Host
	client *http.Client
	nextID atomic.Int64 // user names are unique over the whole run

	answersMu sync.Mutex
	answers   map[string]time.Time // exchanged access_token -> when the IdP answered with it
}

func run(module []byte, users int, outage time.Duration, keyBits int, only string) (*Result, error) {
	res := &Result{BurstRequests: burstRequests, BurstUsers: burstUsers, BurstWorkers: workers,
		ModuleBytes: len(module), IdPKeyBits: keyBits, OutageKeys: outageUsers, Notes: map[string]string{}}
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, err
	}
	cfg := idp.DefaultConfig()
	cfg.SigningKey = key
	p, err := idp.Start(cfg)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	u, err := upstream.Start("")
	if err != nil {
		return nil, err
	}
	defer u.Close()
	b := &bench{module: module, idp: p, up: u, answers: map[string]time.Time{},
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * burstRequests}}}
	p.SetResponseHook(func(grant string, body map[string]any) {
		if grant != idp.GrantTokenExchange {
			return
		}
		if tok, _ := body["access_token"].(string); tok != "" {
			b.answersMu.Lock()
			b.answers[tok] = time.Now()
			b.answersMu.Unlock()
		}
	})

	switch only {
	case "module":
		return res, b.moduleTimes(res)
	case "refresh":
		return res, b.refresh(res)
	case "fleet":
		return res, b.fleet(res)
	case "users":
		if err := b.startProxy(); err != nil {
			return nil, err
		}
		defer b.proxy.Close()
		return res, b.manyUsers(res, users)
	}

	// Phase A: burst, release, hit and passthrough, outage, on one proxy.
	if err := b.startProxy(); err != nil {
		return nil, err
	}
	progress("burst: %d requests from %d users", burstRequests, burstUsers)
	if err := b.burst(res); err != nil {
		return nil, err
	}
	progress("release: IdP answer to held requests at the upstream")
	if err := b.releaseLatency(res); err != nil {
		return nil, err
	}
	if err := b.moduleTimes(res); err != nil {
		return nil, err
	}
	progress("outage: %d users, a request every %v each, IdP stopped for %v", outageUsers, outageEvery, outage)
	if err := b.outage(res, outage); err != nil {
		return nil, err
	}
	b.proxy.Close()
	b.client.CloseIdleConnections()
	if err := p.Restart(); err != nil {
		return nil, err
	}
	p.SetResponseHook(nil)

	progress("refresh: %d active users, a request every %v each, over %d token lifetimes of %v", refreshUsers, refreshEvery, refreshLifetimes, refreshLifetime)
	if err := b.refresh(res); err != nil {
		return nil, err
	}

	progress("fleet: %d proxies, round robin and consistent hashing", fleetReplicas)
	if err := b.fleet(res); err != nil {
		return nil, err
	}

	// Phase B: many users, on a fresh proxy.
	if err := b.startProxy(); err != nil {
		return nil, err
	}
	defer b.proxy.Close()
	progress("users: %d distinct users", users)
	if err := b.manyUsers(res, users); err != nil {
		return nil, err
	}

	res.Notes["burst"] = "1000 concurrent requests (10 per user) from 100 users with fresh tokens, 4 workers, " +
		"round-robin; burst_exchanges counts token exchanges the IdP received. Goal: burst_exchanges == burst_users."
	res.Notes["hit_ns_per_req"] = fmt.Sprintf("module time per request (all calls into the module for the request's "+
		"context: on_context_create, on_request_headers, on_response_headers, on_done, on_log, on_delete; wall clock "+
		"inside the calls, host functions included), the user's token cached (memo and shared data). In process: "+
		"Host.ServeHTTP called directly, one request at a time, one worker, wazero without termination checks; "+
		"%d rounds of %d requests of each kind (V8: %d), the kinds alternating within every round; the figure is the "+
		"median round (ratios: median of the rounds' ratios), *_min_max the rounds' extremes, "+
		"module_time_rounds_ns every round. v8_* is the same in V8 under node (e2e/bench/v8/host.mjs), "+
		"whose host functions are JavaScript: they count in the module's time as Envoy's C++ ones do.", moduleTimeRounds, moduleTimeBatch, v8Batch)
	res.Notes["passthrough_ns_per_req"] = "a request with a user token to a path that matches no rule (the plugin " +
		"has rules: [{pathPrefix: /api}]): the filter reads :path and leaves it alone; measured like hit_ns_per_req."
	res.Notes["floor_ns_per_req"] = "e2e/bench/floor (reads and removes the user token header, writes " +
		"authorization, nothing else) on a proxy of its own, measured like hit_ns_per_req in the same rounds."
	res.Notes["release"] = "from the IdP's answer (its response hook, as the answer is written) to the upstream " +
		"receiving each request that was sent before that answer and carries its token: 60 rounds of 8 concurrent " +
		"requests (2 per worker) of a new user, the IdP answering after 20 ms (no congestion). burst_release_* is " +
		"the same over the 1000-request burst, the burst's own congestion on this machine included."
	res.Notes["outage"] = fmt.Sprintf("%d users with uncached tokens, one request every %v each, IdP stopped for %v; "+
		"callouts to the idp cluster (exchanges and any service-token fetch) divided by the %d keys.",
		outageUsers, outageEvery, outage, outageUsers)
	res.Notes["users"] = fmt.Sprintf("%d distinct users, one request each through a fresh proxy (64 clients); "+
		"shared_bytes_bound is the README formula with this run's namespace (README: %d for 1024 slots); "+
		"vm_pages_before after %d users, vm_pages_after after all, largest worker VM.", res.Users, readmeBound, pagesAtUsers)
	if res.Users != 100_000 {
		res.Notes["users_100k_shared_bytes"] = fmt.Sprintf("measured with %d users, not 100000 (BENCH_USERS)", res.Users)
	}
	res.Notes["idp"] = fmt.Sprintf("RS256 with a %d-bit key (BENCH_KEY_BITS; Keycloak's default is 2048, whose "+
		"signatures make each token 171 bytes longer); host log level info (Envoy's default).", keyBits)
	return res, nil
}

func (b *bench) startProxy() error {
	px, err := b.launch(b.proxyConfig(workers, false))
	if err != nil {
		return err
	}
	b.proxy = px
	return nil
}

// launch starts a filter proxy and waits for its service-account token.
func (b *bench) launch(cfg host.Config) (*host.Host, error) {
	px, err := host.Start(context.Background(), cfg)
	if err != nil {
		var se *host.StartError
		if errors.As(err, &se) {
			for _, l := range se.Logs {
				progress("log: %s", l.Message)
			}
		}
		return nil, err
	}
	// The service-account token is fetched on the first tick and shared: wait for it.
	if err := px.WaitFor(30*time.Second, func() bool {
		for k := range px.SharedDataSnapshot() {
			if strings.HasSuffix(k, ":sa") {
				return true
			}
		}
		return false
	}); err != nil {
		px.Close()
		return nil, fmt.Errorf("no service-account token fetched: %w", err)
	}
	return px, nil
}

// proxyConfig is the filter's proxy: exchange on, audience kagenti-api, rules [/api].
func (b *bench) proxyConfig(workers int, noTerminationChecks bool) host.Config {
	return b.proxyConfigWith(workers, noTerminationChecks, "")
}

// proxyConfigWith adds top-level fields (a JSON fragment, e.g. `"refreshAheadSeconds":3,`).
func (b *bench) proxyConfigWith(workers int, noTerminationChecks bool, extra string) host.Config {
	secret, _ := b.idp.Client(filterClient)
	plugin := `{"tokenEndpoint":"` + b.idp.TokenEndpoint() + `","cluster":"idp","clientId":"` + filterClient +
		`","clientSecretEnv":"TOKEN_EXCHANGE_CLIENT_SECRET",` + extra + `"tokenExchange":{"enabled":true,"audience":"` + apiAudience + `","newKeyExchangesPerSecond":0},` +
		// The API is under /api; anything else behind the gateway matches no rule and passes through.
		`"rules":[{"pathPrefix":"/api"}]}`
	return host.Config{
		Module:              b.module,
		PluginConfig:        []byte(plugin),
		VMID:                "token-exchange",
		RootID:              "token-exchange",
		PluginName:          "token-exchange",
		Workers:             workers,
		Clusters:            map[string]string{"idp": b.idp.Addr(), "upstream": b.up.Addr()},
		UpstreamCluster:     "upstream",
		Env:                 benchEnv(secret.Secret),
		LogLevel:            host.LogInfo,
		NoTerminationChecks: noTerminationChecks,
	}
}

// benchEnv is the VM's environment: the client secret, and BENCH_GOGC as GOGC when set (the Go
// runtime reads it at start-up, from Envoy's vm_config environment_variables too).
func benchEnv(secret string) map[string]string {
	env := map[string]string{"TOKEN_EXCHANGE_CLIENT_SECRET": secret}
	if v := os.Getenv("BENCH_GOGC"); v != "" {
		env["GOGC"] = v
	}
	return env
}

// newUsers adds n users to the IdP and mints a token of each (as the UI's login would).
func (b *bench) newUsers(n int) (names, tokens []string, err error) {
	for range n {
		name, tok, err := b.newUser()
		if err != nil {
			return nil, nil, err
		}
		names = append(names, name)
		tokens = append(tokens, tok)
	}
	return names, tokens, nil
}

func (b *bench) newUser() (name, token string, err error) {
	name = "bench-user-" + strconv.FormatInt(b.nextID.Add(1), 10)
	if err := b.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
		return "", "", err
	}
	token, err = b.idp.MintUserToken(name, uiClient)
	return name, token, err
}

// reply is what a client got back.
type reply struct {
	status int
	sub    string // the sub of the token the upstream saw
	token  string // that token
	err    error
}

func (b *bench) get(ctx context.Context, userToken string, headers ...string) reply {
	return b.getPath(ctx, "/api", userToken, headers...)
}

func (b *bench) getPath(ctx context.Context, path, userToken string, headers ...string) reply {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.proxy.URL()+path, nil)
	if err != nil {
		return reply{err: err}
	}
	if userToken != "" {
		req.Header.Set("x-user-oidc-token", userToken)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, err: err}
	if resp.StatusCode == http.StatusOK {
		var echo upstream.Echo
		if err := json.Unmarshal(body, &echo); err == nil {
			r.sub, _ = echo.Claims["sub"].(string)
			if a := echo.Headers["authorization"]; len(a) > 0 {
				r.token = strings.TrimPrefix(a[0], "Bearer ")
			}
		}
	}
	return r
}

func (b *bench) burst(res *Result) error {
	names, tokens, err := b.newUsers(burstUsers)
	if err != nil {
		return err
	}
	b.idp.ResetCounts()
	b.up.Reset()
	sent := make([]time.Time, burstRequests)
	replies := make([]reply, burstRequests)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range burstRequests {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			sent[i] = time.Now()
			replies[i] = b.get(context.Background(), tokens[i%burstUsers], "x-bench-request", strconv.Itoa(i))
		}()
	}
	start.Done()
	done.Wait()
	res.BurstExchanges = b.idp.TokenExchangeCount()
	for i, r := range replies {
		if r.err != nil || r.status != http.StatusOK || r.sub != b.idp.Subject(names[i%burstUsers]) {
			res.BurstErrors++
			if res.BurstErrors <= 3 {
				progress("burst request %d: status %d, sub %q, err %v", i, r.status, r.sub, r.err)
			}
		}
	}

	// Release latency: requests sent before the answer whose token they carried.
	b.answersMu.Lock()
	answers := b.answers
	b.answers = map[string]time.Time{}
	b.answersMu.Unlock()
	var lat []time.Duration
	for _, r := range b.up.Requests() {
		i, err := strconv.Atoi(r.Header.Get("x-bench-request"))
		if err != nil || i < 0 || i >= burstRequests {
			continue
		}
		answered, ok := answers[r.BearerToken]
		if !ok || !sent[i].Before(answered) {
			continue
		}
		lat = append(lat, r.Time.Sub(answered))
	}
	slices.Sort(lat)
	res.BurstReleaseSamples = len(lat)
	if len(lat) > 0 {
		res.BurstReleaseP50Us = percentile(lat, 50).Microseconds()
		res.BurstReleaseP99Us = percentile(lat, 99).Microseconds()
	}
	return nil
}

// releaseLatency measures, without congestion, the time from the IdP's answer to each held
// request reaching the upstream: rounds of 8 concurrent requests (two per worker) of a new user,
// the IdP answering exchanges after 20 ms so that every request is held when the answer comes.
func (b *bench) releaseLatency(res *Result) error {
	const rounds, perRound = 60, 2 * workers
	b.idp.SetFault(idp.TokenExchangeOnly, idp.Latency(20*time.Millisecond))
	defer b.idp.ClearFault(idp.TokenExchangeOnly)
	var lat []time.Duration
	for range rounds {
		name, tok, err := b.newUser()
		if err != nil {
			return err
		}
		b.waitQuiet()
		b.up.Reset()
		sent := make([]time.Time, perRound)
		var wg sync.WaitGroup
		var bad atomic.Int64
		for i := range perRound {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent[i] = time.Now()
				r := b.get(context.Background(), tok, "x-bench-request", strconv.Itoa(i))
				if r.err != nil || r.status != http.StatusOK || r.sub != b.idp.Subject(name) {
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
		if bad.Load() > 0 {
			return fmt.Errorf("release: %d requests of %s without their token", bad.Load(), name)
		}
		b.answersMu.Lock()
		answers := b.answers
		b.answers = map[string]time.Time{}
		b.answersMu.Unlock()
		for _, r := range b.up.Requests() {
			i, err := strconv.Atoi(r.Header.Get("x-bench-request"))
			if err != nil || i < 0 || i >= perRound {
				continue
			}
			if answered, ok := answers[r.BearerToken]; ok && sent[i].Before(answered) {
				lat = append(lat, r.Time.Sub(answered))
			}
		}
	}
	slices.Sort(lat)
	res.ReleaseSamples = len(lat)
	if len(lat) > 0 {
		res.ReleaseP50Us = percentile(lat, 50).Microseconds()
		res.ReleaseP99Us = percentile(lat, 99).Microseconds()
	}
	return nil
}

func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// streamsDeleted waits until every stream created since px's module time was last reset has
// been deleted: on_done, on_log and on_delete run on the VM's loop after the answer went out.
func streamsDeleted(px *host.Host) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		mt := px.ModuleTime()
		if mt[host.CallKind{Export: "proxy_on_delete"}].Calls == mt[host.CallKind{Export: "proxy_on_context_create"}].Calls {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("streams not deleted after their answers")
		}
		time.Sleep(time.Millisecond) // module time wakes no waiter: poll
	}
}

// waitQuiet waits until no request is held (the previous phase is over).
func (b *bench) waitQuiet() {
	_ = b.proxy.WaitFor(10*time.Second, func() bool {
		v, _ := b.proxy.Metric("token_exchange.requests_held")
		return v == 0
	})
}

func (b *bench) outage(res *Result, d time.Duration) error {
	_, tokens, err := b.newUsers(outageUsers)
	if err != nil {
		return err
	}
	b.waitQuiet()
	if err := b.idp.Stop(); err != nil {
		return err
	}
	before := b.proxy.Callouts("idp")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	var sent, bad atomic.Int64
	for _, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(outageEvery)
			defer t.Stop()
			var inner sync.WaitGroup
			defer inner.Wait()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				inner.Add(1)
				sent.Add(1)
				go func() { // a request every 50 ms even while the previous one is held
					defer inner.Done()
					if r := b.get(context.Background(), tok); r.err != nil || r.status != http.StatusOK {
						bad.Add(1)
					}
				}()
			}
		}()
	}
	wg.Wait()
	callouts := b.proxy.Callouts("idp") - before
	res.OutageSeconds = time.Since(begin).Seconds()
	res.OutageRequests = int(sent.Load())
	res.OutageCalloutsPerKey = float64(callouts) / outageUsers
	if n := bad.Load(); n > 0 {
		res.Notes["outage_errors"] = fmt.Sprintf("%d requests did not end in 200 (fallback) during the outage", n)
	}
	return nil
}

// manyUsers sends one request for each of n new users, 64 at a time.
func (b *bench) manyUsers(res *Result, n int) error {
	const clients = 64
	begin := time.Now()
	var errs atomic.Int64
	var tokenBytes atomic.Int64
	wave := func(count int) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr error
		var once sync.Once
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(count) {
					name, tok, err := b.newUser()
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					r := b.get(context.Background(), tok)
					if r.err != nil || r.status != http.StatusOK || r.sub != b.idp.Subject(name) {
						if errs.Add(1) <= 3 {
							progress("user %s: status %d sub %q err %v", name, r.status, r.sub, r.err)
						}
						continue
					}
					tokenBytes.Store(int64(len(r.token)))
				}
			}()
		}
		wg.Wait()
		return firstErr
	}
	done := 0
	step := func(count int) error {
		if err := wave(count); err != nil {
			return err
		}
		done += count
		// The IdP and the upstream record every request: forget them, they are not measured here.
		b.idp.ResetCounts()
		b.up.Reset()
		return nil
	}
	if err := step(pagesAtUsers); err != nil {
		return err
	}
	b.waitQuiet()
	res.VMPagesBefore = b.largestWorkerPages()
	for done < n {
		count := min(10_000, n-done)
		if err := step(count); err != nil {
			return err
		}
		progress("users: %d of %d (%.0f s)", done, n, time.Since(begin).Seconds())
	}
	b.waitQuiet()
	res.Users = done
	res.UsersSeconds = int64(time.Since(begin).Seconds())
	res.UsersErrors = int(errs.Load())
	res.VMPagesAfter = b.largestWorkerPages()
	res.UsersSharedBytes = b.proxy.SharedDataBytes()
	res.SharedKeys = b.proxy.SharedDataKeys()
	res.ExchangedTokenBytes = int(tokenBytes.Load())
	res.SharedBytesBound = boundFor(b.proxy.SharedDataSnapshot())
	res.SharedBytesBoundOK = res.UsersSharedBytes <= res.SharedBytesBound && res.UsersSharedBytes <= readmeBound
	return nil
}

func (b *bench) largestWorkerPages() int {
	pages := b.proxy.MemoryPages()
	most := 0
	for _, p := range pages[:workers] { // the last entry is the main-thread VM
		most = max(most, int(p))
	}
	return most
}

// boundFor is the README's bound for the default slots with the namespace of the keys found:
//
//	slots × (2 + 4 × (34 + 8192) + len(namespace) + 3) + digits of the slot numbers
//	  + service-token record (8219 + len(namespace) + 3) + service-fetch lease (100 + len(namespace) + 3)
//	  + waker list (64 × (16 + 8) + len(namespace) + 2) + new-key bucket (17 + len(namespace) + 2)
//	  + generation word (8 + len(namespace) + 2)
//
// (filter/internal/cache.SharedBytesBound, which this package may not import; its test pins the
// value for the default namespace length, as readmeBound does here.)
func boundFor(snapshot map[string][]byte) int {
	ns := ""
	for k := range snapshot {
		if i := strings.LastIndex(k, ":s:"); i > 0 {
			ns = k[:i]
			break
		}
		if strings.HasSuffix(k, ":sa") {
			ns = strings.TrimSuffix(k, ":sa")
		}
	}
	digits := 0
	for i := range slots {
		digits += len(strconv.Itoa(i))
	}
	return slots*(2+4*(34+8192)+len(ns)+3) + digits + 8219 + len(ns) + 3 + 100 + len(ns) + 3 +
		64*24 + len(ns) + 2 + 17 + len(ns) + 2 + 8 + len(ns) + 2
}

func printTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name string, v any, what string) { fmt.Fprintf(tw, "%s\t%v\t  %s\t\n", name, v, what) }
	fmt.Fprintln(tw, "metric\tvalue\t  \t")
	row("burst_requests", r.BurstRequests, "concurrent requests")
	row("burst_users", r.BurstUsers, "users, tokens not cached")
	row("burst_workers", r.BurstWorkers, "worker VMs")
	row("burst_exchanges", r.BurstExchanges, "exchanges at the IdP (goal: = burst_users)")
	row("burst_errors", r.BurstErrors, "requests without their user's exchanged token")
	mm := func(v [2]float64) string { return fmt.Sprintf("min %g, max %g", v[0], v[1]) }
	row("hit_ns_per_req", r.HitNsPerReq, "module time per request, cached user ("+r.ModuleTimeEngine+"); "+mm(r.HitNsMinMax))
	row("passthrough_ns_per_req", r.PassthroughNsPerReq, "module time per request that matches no rule; "+mm(r.PassthroughNsMinMax))
	row("floor_ns_per_req", r.FloorNsPerReq, "the floor filter: only the header work a hit needs; "+mm(r.FloorNsMinMax))
	row("hit_over_passthrough", fmt.Sprintf("%.2f", r.HitOverPassthrough), "goal ≤ 2.0; per round "+mm(r.HitOverPassthroughMinMax))
	row("hit_over_floor", fmt.Sprintf("%.2f", r.HitOverFloor), "goal ≤ 1.25; per round "+mm(r.HitOverFloorMinMax))
	row("refresh_held_per_user", fmt.Sprintf("%.2f", r.RefreshHeldPerUser), fmt.Sprintf("goal 1.0 (refresh off: %.2f)", r.RefreshHeldPerUserOff))
	row("refresh_exchanges_per_user_per_lifetime", fmt.Sprintf("%.2f", r.RefreshExchangesPerUserPerLifetime),
		fmt.Sprintf("4 workers; the design gives %.2f whatever the workers", r.RefreshExpectedPerLifetime))
	row("refresh_p99_us", r.RefreshP99Us, fmt.Sprintf("active users' request latency p99 (p50 %d); only hits: %d; refresh off: %d",
		r.RefreshP50Us, r.RefreshHitP99Us, r.RefreshOffP99Us))
	row("fleet_exchanges_per_user_rr", fmt.Sprintf("%.2f", r.FleetExchangesPerUserRR), fmt.Sprintf("%d proxies behind round robin", r.FleetReplicas))
	row("fleet_exchanges_per_user_hash", fmt.Sprintf("%.2f", r.FleetExchangesPerUserHash), "consistent hashing on the user token header; goal ≈ 1")
	row("fleet_remapped_share", r.FleetRemappedShare, fmt.Sprintf("users moved when one of %d proxies leaves", r.FleetReplicas))
	row("users", r.Users, "distinct users of the memory phase")
	row("users_100k_shared_bytes", r.UsersSharedBytes, "shared-data bytes after them")
	row("shared_bytes_bound", r.SharedBytesBound, fmt.Sprintf("README bound (within: %v)", r.SharedBytesBoundOK))
	row("vm_pages_before", r.VMPagesBefore, fmt.Sprintf("largest worker VM, 64 KiB pages, after %d users", pagesAtUsers))
	row("vm_pages_after", r.VMPagesAfter, "largest worker VM, 64 KiB pages, after all users")
	row("users_errors", r.UsersErrors, "memory-phase requests without their user's token")
	row("users_seconds", r.UsersSeconds, "memory phase wall time")
	row("release_p50_us", r.ReleaseP50Us, fmt.Sprintf("IdP answer -> held request at upstream (%d samples)", r.ReleaseSamples))
	row("release_p99_us", r.ReleaseP99Us, "")
	row("burst_release_p50_us", r.BurstReleaseP50Us, fmt.Sprintf("the same within the burst (%d samples)", r.BurstReleaseSamples))
	row("burst_release_p99_us", r.BurstReleaseP99Us, "")
	row("outage_callouts_per_key", fmt.Sprintf("%.1f", r.OutageCalloutsPerKey), fmt.Sprintf("%d keys, %.1f s, %d requests", r.OutageKeys, r.OutageSeconds, r.OutageRequests))
	row("module_bytes", r.ModuleBytes, "")
	row("idp_key_bits", r.IdPKeyBits, "")
	row("exchanged_token_bytes", r.ExchangedTokenBytes, "")
	tw.Flush()
	keys := make([]string, 0, len(r.Notes))
	for k := range r.Notes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fmt.Fprintln(w, "\nnotes:")
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, r.Notes[k])
	}
}
