package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// Module time, in process. Each kind of request (a cached user's hit, a pass-through, the floor
// filter's same header work) goes through Host.ServeHTTP directly, one at a time, on a proxy of
// one worker whose wazero runs without termination checks (host.Config.NoTerminationChecks: V8
// in Envoy has none on this path, and they slow loop-heavy guest code 2.6–4×). No client
// socket, no concurrent request: what is timed is the module's calls (host.ModuleTime) and
// the host functions they make. The three kinds take turns every moduleTimeChunk requests within
// a round (timedRound), so a round's ratios compare code measured under the same machine state.
// The figures are the median round (ratios: the median of the rounds' ratios); min and max over
// rounds say how stable they are.
//
// A round must be long against the module's garbage collections, which run inside the callbacks
// (a wasm VM has no background mark workers: the allocating callback does all the marking) and
// come every few thousand requests: a round of a few hundred requests either has one or not, and
// the figures jump by several times between rounds. V8 is fast enough for much longer rounds.
const (
	moduleTimeRounds = 31
	moduleTimeBatch  = 2000
	moduleTimeChunk  = 100
	moduleTimeWarmup = 1000
	v8Batch          = 10000
	v8Chunk          = 500
	v8Warmup         = 5000
)

// timedKind is one kind of request measured by moduleTime.
type timedKind struct {
	name   string
	px     *host.Host
	path   string
	token  string
	metric string // a metric that must grow by one per request ("" for the floor)

	perRound []float64 // ns per request, per round
	byCall   map[string]time.Duration
	n        int
}

func (b *bench) moduleTime(res *Result) error {
	filter, err := b.launch(b.proxyConfig(1, true))
	if err != nil {
		return err
	}
	defer filter.Close()
	_, tokens, err := b.newUsers(1)
	if err != nil {
		return err
	}
	// The floor writes the very value the filter writes for this user (same bytes to copy).
	authorization, err := b.hitAuthorization(filter, tokens[0])
	if err != nil {
		return err
	}
	floorModule, err := buildFloor()
	if err != nil {
		return err
	}
	floor, err := host.Start(context.Background(), host.Config{Module: floorModule, Workers: 1, NoTerminationChecks: true,
		PluginConfig: []byte(authorization), Clusters: map[string]string{"upstream": b.up.Addr()},
		UpstreamCluster: "upstream", LogLevel: host.LogInfo})
	if err != nil {
		return err
	}
	defer floor.Close()

	kinds := []*timedKind{
		{name: "hit", px: filter, path: "/api", token: tokens[0], metric: "token_exchange.cache.hit"},
		// The same user token, to a path no rule matches: the filter leaves the request alone.
		{name: "passthrough", px: filter, path: "/static/app.js", token: tokens[0], metric: "token_exchange.requests_passed_through"},
		{name: "floor", px: floor, path: "/api", token: tokens[0]},
	}
	// The first request exchanges the hit user's token; the warm-up runs every path often
	// enough for the runtime's heap and the memo to settle.
	for _, k := range kinds {
		k.byCall = map[string]time.Duration{}
		for range moduleTimeWarmup {
			if err := serveOne(k.px, k.path, k.token); err != nil {
				return fmt.Errorf("%s warm-up: %w", k.name, err)
			}
		}
	}
	for range moduleTimeRounds {
		if err := timedRound(kinds); err != nil {
			return err
		}
	}
	hit, pass, fl := kinds[0], kinds[1], kinds[2]
	res.HitNsPerReq, res.PassthroughNsPerReq, res.FloorNsPerReq = int64(median(hit.perRound)), int64(median(pass.perRound)), int64(median(fl.perRound))
	res.HitNsMinMax, res.PassthroughNsMinMax, res.FloorNsMinMax = minMax(hit.perRound), minMax(pass.perRound), minMax(fl.perRound)
	res.HitOverPassthrough = median(ratios(hit.perRound, pass.perRound))
	res.HitOverFloor = median(ratios(hit.perRound, fl.perRound))
	res.HitOverPassthroughMinMax = minMax(ratios(hit.perRound, pass.perRound))
	res.HitOverFloorMinMax = minMax(ratios(hit.perRound, fl.perRound))
	res.HitRequests, res.PassthroughRequests = hit.n, pass.n
	res.ModuleTimeRounds = moduleTimeRounds
	res.ModuleTimeEngine = "wazero (compiler, no termination checks), 1 worker, in process"
	res.HitNsByCallback, res.PassthroughNsByCallback, res.FloorNsByCallback = perCall(hit), perCall(pass), perCall(fl)
	for _, k := range kinds {
		res.addRounds("wazero "+k.name, k.perRound)
	}
	return nil
}

// timedRound serves moduleTimeBatch requests of every kind, the kinds taking turns every
// moduleTimeChunk requests, and adds each kind's module time per request to its rounds. The
// machine's speed drifts (other work, frequency): kinds timed in turns at this grain see the
// same drift, so a round's ratios compare like with like. The host's own garbage collector is
// off inside the round (Envoy's C++ host has none, and its background marking would compete
// with the module for the cores); the module's collector runs as always, inside its callbacks.
func timedRound(kinds []*timedKind) error {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := make([]uint64, len(kinds))
	for i, k := range kinds {
		if k.metric != "" {
			before[i], _ = k.px.Metric(k.metric)
		}
	}
	total := make([]time.Duration, len(kinds))
	for range moduleTimeBatch / moduleTimeChunk {
		for i, k := range kinds {
			if err := streamsDeleted(k.px); err != nil {
				return err
			}
			k.px.ResetModuleTime()
			for range moduleTimeChunk {
				if err := serveOne(k.px, k.path, k.token); err != nil {
					return fmt.Errorf("%s: %w", k.name, err)
				}
			}
			if err := streamsDeleted(k.px); err != nil {
				return err
			}
			st := k.px.StreamModuleTime()
			if st.Calls != 6*moduleTimeChunk {
				return fmt.Errorf("%s: %d stream calls for %d requests, want 6 each", k.name, st.Calls, moduleTimeChunk)
			}
			total[i] += st.Time
			for ck, ct := range k.px.ModuleTime() {
				if !ck.Root {
					k.byCall[ck.Export] += ct.Time
				}
			}
		}
	}
	for i, k := range kinds {
		if k.metric != "" {
			if after, _ := k.px.Metric(k.metric); after-before[i] != moduleTimeBatch {
				return fmt.Errorf("%s grew by %d for %d requests: not the path meant", k.metric, after-before[i], moduleTimeBatch)
			}
		}
		k.perRound = append(k.perRound, float64(total[i].Nanoseconds())/moduleTimeBatch)
		k.n += moduleTimeBatch
	}
	return nil
}

// hitAuthorization is the authorization value px's filter sends upstream for userToken (its
// first request exchanges it).
func (b *bench) hitAuthorization(px *host.Host, userToken string) (string, error) {
	b.up.Reset()
	if err := serveOne(px, "/api", userToken); err != nil {
		return "", fmt.Errorf("the hit user's first request: %w", err)
	}
	reqs := b.up.Requests()
	if len(reqs) != 1 || !strings.HasPrefix(reqs[0].Header.Get("Authorization"), "Bearer ") {
		return "", fmt.Errorf("the hit user's first request did not reach the upstream with a bearer token")
	}
	return reqs[0].Header.Get("Authorization"), nil
}

// serveOne sends one GET through px's handler in this goroutine and checks the upstream answered.
func serveOne(px *host.Host, path, token string) error {
	req := httptest.NewRequest(http.MethodGet, "http://gateway"+path, nil)
	req.Header.Set("x-user-oidc-token", token)
	rec := httptest.NewRecorder()
	px.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("status %d: %s", rec.Code, rec.Body.String())
	}
	return nil
}

// buildFloor compiles e2e/bench/floor with the module's own toolchain (no runtime patch: the
// floor never sleeps or polls either way).
func buildFloor() ([]byte, error) {
	dir, err := os.MkdirTemp("", "floor")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "floor.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "./e2e/bench/floor")
	cmd.Dir = wasmbuild.RepoRoot()
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOTOOLCHAIN="+wasmbuild.Toolchain)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the floor filter: %v\n%s", err, msg)
	}
	return os.ReadFile(out)
}

func perCall(k *timedKind) map[string]int64 {
	out := map[string]int64{}
	for name, d := range k.byCall {
		out[name] = d.Nanoseconds() / int64(k.n)
	}
	return out
}

// median is the middle round: on a shared machine a few rounds are slowed by other work, and
// the middle one is what the code costs. Every round still includes the module's own garbage
// collections in proportion (a round is hundreds of requests).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	} else {
		return s[n/2]
	}
}

func ratios(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

// minMax is [min, max] of xs, rounded to two decimals for ratios and to whole ns otherwise.
func minMax(xs []float64) [2]float64 {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	round := func(x float64) float64 {
		if x < 100 {
			return float64(int64(x*100+0.5)) / 100
		}
		return float64(int64(x + 0.5))
	}
	return [2]float64{round(lo), round(hi)}
}

// v8Time runs the same three kinds in V8 through e2e/bench/v8/host.mjs (a minimal proxy-wasm host
// for node), when node is installed; it reports false without it.
func (b *bench) v8Time(res *Result) (bool, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return false, nil
	}
	floorModule, err := buildFloor()
	if err != nil {
		return false, err
	}
	dir, err := os.MkdirTemp("", "v8bench")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(dir)
	filterPath, floorPath := filepath.Join(dir, "filter.wasm"), filepath.Join(dir, "floor.wasm")
	if err := os.WriteFile(filterPath, b.module, 0o644); err != nil {
		return false, err
	}
	if err := os.WriteFile(floorPath, floorModule, 0o644); err != nil {
		return false, err
	}
	_, tokens, err := b.newUsers(1)
	if err != nil {
		return false, err
	}
	cfg := b.proxyConfig(1, true)
	spec, _ := json.Marshal(map[string]any{
		"filter": filterPath, "floor": floorPath, "pluginConfig": string(cfg.PluginConfig), "env": cfg.Env,
		"clusters": map[string]string{"idp": "http://" + b.idp.Addr()}, "userToken": tokens[0],
		"rounds": moduleTimeRounds, "batch": v8Batch, "chunk": v8Chunk, "warmup": v8Warmup,
		"only": os.Getenv("BENCH_V8_ONLY"), // hit, passthrough or floor: one kind, e.g. to profile it
	})
	specPath := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specPath, spec, 0o600); err != nil {
		return false, err
	}
	// BENCH_NODE_FLAGS passes flags to node, e.g. "--cpu-prof --cpu-prof-dir=build/prof" for a
	// profile of the module's functions by name.
	args := append([]string{"--expose-gc"}, strings.Fields(os.Getenv("BENCH_NODE_FLAGS"))...)
	args = append(args, filepath.Join(wasmbuild.RepoRoot(), "e2e", "bench", "v8", "host.mjs"), specPath)
	cmd := exec.Command(node, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return false, fmt.Errorf("node: %v: %s", err, stderr.String())
	}
	type kind struct {
		Rounds []float64        `json:"rounds"`
		ByCall map[string]int64 `json:"byCall"`
	}
	var r struct {
		Engine      string `json:"engine"`
		Hit         kind   `json:"hit"`
		Passthrough kind   `json:"passthrough"`
		Floor       kind   `json:"floor"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return false, fmt.Errorf("node's answer: %v: %s", err, out)
	}
	if os.Getenv("BENCH_V8_ONLY") != "" {
		progress("V8 run of one kind only (BENCH_V8_ONLY): not recorded")
		return true, nil
	}
	res.V8Engine = r.Engine
	res.V8HitNsPerReq, res.V8PassthroughNsPerReq, res.V8FloorNsPerReq = int64(median(r.Hit.Rounds)), int64(median(r.Passthrough.Rounds)), int64(median(r.Floor.Rounds))
	res.V8HitOverPassthrough = median(ratios(r.Hit.Rounds, r.Passthrough.Rounds))
	res.V8HitOverFloor = median(ratios(r.Hit.Rounds, r.Floor.Rounds))
	res.V8HitOverPassthroughMinMax = minMax(ratios(r.Hit.Rounds, r.Passthrough.Rounds))
	res.V8HitOverFloorMinMax = minMax(ratios(r.Hit.Rounds, r.Floor.Rounds))
	res.V8HitNsByCallback, res.V8PassthroughNsByCallback, res.V8FloorNsByCallback = r.Hit.ByCall, r.Passthrough.ByCall, r.Floor.ByCall
	res.addRounds("v8 hit", r.Hit.Rounds)
	res.addRounds("v8 passthrough", r.Passthrough.Rounds)
	res.addRounds("v8 floor", r.Floor.Rounds)
	return true, nil
}

// moduleTimes runs the module-time phase in wazero, then in V8 when node is installed.
func (b *bench) moduleTimes(res *Result) error {
	progress("module time: hit, pass-through and the floor filter, in process (wazero)")
	if err := b.moduleTime(res); err != nil {
		return err
	}
	progress("module time: the same in V8 (node)")
	ran, err := b.v8Time(res)
	if err != nil {
		return err
	}
	if !ran {
		progress("module time in V8: skipped, node is not installed")
		res.Notes["v8"] = "not measured: node was not installed"
	}
	return nil
}

func (r *Result) addRounds(name string, ns []float64) {
	if r.RoundsNs == nil {
		r.RoundsNs = map[string][]int64{}
	}
	for _, x := range ns {
		r.RoundsNs[name] = append(r.RoundsNs[name], int64(x))
	}
}
