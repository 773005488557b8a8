package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
)

// FailurePolicy is the filter's failure_policy: what happens to requests after the VM trapped.
type FailurePolicy int

const (
	// FailClosed (Envoy's default): the trapping request and every later request on that VM
	// get 503.
	FailClosed FailurePolicy = iota
	// FailOpen: the trapping request carries on without the filter, later ones bypass it.
	FailOpen
	// FailReload: the trapping request gets 503; the next request on that worker gets a fresh
	// VM (instantiated, started and configured again).
	FailReload
)

// LogLevel is a proxy_log level.
type LogLevel uint32

const (
	LogTrace LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogCritical
)

func (l LogLevel) String() string {
	switch l {
	case LogTrace:
		return "trace"
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	case LogError:
		return "error"
	case LogCritical:
		return "critical"
	}
	return fmt.Sprintf("level(%d)", uint32(l))
}

// Worker values of VMs that serve no requests.
const (
	WorkerMain   = -1 // the main-thread VM
	WorkerCanary = -2 // the short-lived canary that checks the configuration at start-up
	WorkerBase   = -3 // the base VM: runs _initialize only, the source Envoy clones workers from
)

// Log is one recorded log line.
type Log struct {
	Level   LogLevel
	Worker  int    // 0..Workers-1, or WorkerMain, WorkerCanary, WorkerBase
	Message string // as the module wrote it (proxy_log, or one fd_write to stdout/stderr)
	Host    bool   // written by the host (a trap, proc_exit, a VM reload), not by the module
}

// Config describes the filter as Envoy's configuration would (see ENVOY-HOST.md).
type Config struct {
	Module       []byte // the compiled module (required)
	PluginConfig []byte // configuration: read in on_configure
	VMConfig     []byte // vm_config.configuration: read in on_vm_start
	VMID         string // vm_config.vm_id: scopes shared data and queues
	RootID       string
	PluginName   string
	// Workers is the number of worker threads, one VM each (default 4). A main-thread VM runs
	// besides them (it serves no requests but starts, configures and ticks like the others).
	Workers int
	// Clusters maps cluster names to plain-HTTP host:port addresses (loopback in tests), for
	// proxy_http_call and for the route.
	Clusters map[string]string
	// UpstreamCluster is the route's cluster (its address is in Clusters). Empty: no route
	// matches and requests that pass the filter get Envoy's 404.
	UpstreamCluster string
	RouteName       string            // xds.route_name
	Env             map[string]string // vm_config.environment_variables, seen through WASI
	FailurePolicy   FailurePolicy
	Listen          string    // default "127.0.0.1:0"
	LogWriter       io.Writer // optional: every log line is echoed here
	// LogLevel is the lowest level recorded (default LogTrace: everything), and what
	// proxy_get_log_level answers under ABI 0.2.1.
	LogLevel LogLevel
	// CalloutBodyLimit bounds a callout's response body (default 1 MiB); a larger body makes
	// the callback see 0 headers and 0 body, as Envoy's buffer limit does.
	CalloutBodyLimit int
	// RouteTimeout is the wait for the upstream's response headers before Envoy answers 504
	// (default 15s, Envoy's route timeout; negative: none).
	RouteTimeout time.Duration
	// StreamIdleTimeout bounds how long a held request waits before a 408 (default 5m, Envoy's
	// stream_idle_timeout; negative: none).
	StreamIdleTimeout time.Duration
	// Plugins are further plugin configurations sharing the VMs, as Istio shares one VM per
	// thread between WasmPlugins of equal image, VM configuration and vm_id: each gets its own
	// root context in every VM (ids 2, 3, ... after the first plugin's 1) and its own listener
	// (PluginURL), whose requests go through that plugin only (WasmPlugin match by port).
	Plugins []Plugin
	// DeferredLog imitates HTTP/3 (QuicStatsGatherer): a stream's on_log comes after its
	// on_done and on_delete, DeferredLogDelay (default 20ms) later.
	DeferredLog      bool
	DeferredLogDelay time.Duration
	// LegacyCppHost imitates the proxy-wasm-cpp-host of Envoys before commit 94091cd (PR #533):
	// poll_oneoff answers ENOSYS, and it is not allowed while the host runs the module's
	// allocator ("restricted_callback"). An unpatched Go runtime throws on the first (netpoll,
	// usleep) and traps on the second when a GC the allocation triggers sleeps or polls.
	LegacyCppHost bool
	// TraceCalls records every outermost call into a module as a host log line
	// "call <export> <context id>", so tests can check the order of callbacks among the logs.
	TraceCalls bool
	// PerConnection routes every connection to one worker (as Envoy does) instead of sending
	// each request to the next worker in turn (the default, so tests spread requests without
	// opening connections).
	PerConnection bool
	// NoTerminationChecks runs the module without wazero's termination checks
	// (WithCloseOnContextDone), which slow loop-heavy guest code 2.6–4×: Close can then not
	// interrupt a call that never returns. For benchmarks of module time; V8 in Envoy has no
	// such checks on the hot path.
	NoTerminationChecks bool
}

// Plugin is one more plugin configuration (Config.Plugins).
type Plugin struct {
	Name   string // plugin_name
	RootID string // plugin_root_id
	Config []byte // read in its root's on_configure
}

// StartError is returned by Start when the module does not load, start or configure. Logs
// holds what the VMs logged until then (e.g. the plugin's reason for refusing its
// configuration).
type StartError struct {
	Err  error
	Logs []Log
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Host is a running proxy: a listener with the filter in front of the route's upstream.
type Host struct {
	cfg        Config
	ctx        context.Context // lives until Close; VM calls run under it
	cancel     context.CancelFunc
	calloutCtx context.Context
	stopCalls  context.CancelFunc
	rt         wazero.Runtime
	compiled   wazero.CompiledModule
	transport  *http.Transport
	srv        *http.Server
	ln         net.Listener
	served     chan struct{}

	plugins []*Plugin // Config's own plugin first, then Config.Plugins
	extra   []net.Listener
	shared  *sharedData
	queues  *sharedQueues
	metrics *metrics
	timing  moduleTiming
	vmSeq   atomic.Int64
	polls   atomic.Int64 // poll_oneoff calls by any VM
	rr      atomic.Uint64
	workers []*slot
	main    *vm

	mu       sync.Mutex
	logs     []Log
	changed  chan struct{}
	callouts map[string]int
	// unhealthy clusters have no healthy host: dispatches to them fail inline.
	unhealthy map[string]bool
	// wallStep is how far the wall clock is off (StepWallClock), in nanoseconds.
	wallStep atomic.Int64
	retired  []*vm
	closed   bool
	closing  chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// compilationCache is shared by every Host of the process: a module is compiled once. Code
// compiled with termination checks differs from code without, and wazero's cache does not key
// on it (wazevo getCompiledModule reuses whatever it compiled first), so hosts without the
// checks (NoTerminationChecks) have a cache of their own.
var compilationCache, uncheckedCompilationCache = wazero.NewCompilationCache(), wazero.NewCompilationCache()

// Start loads the module and starts the proxy. Like Envoy it compiles once, checks the ABI
// export, the imports and the callback signatures, runs _initialize in a base VM, starts and
// configures a canary VM (and drops it), then the main-thread VM and one VM per worker, each
// with its own root context, and listens. It fails if any VM fails to start or configure.
func Start(ctx context.Context, cfg Config) (*Host, error) {
	if len(cfg.Module) == 0 {
		return nil, errors.New("host: Config.Module is empty")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.CalloutBodyLimit <= 0 {
		cfg.CalloutBodyLimit = 1 << 20
	}
	cfg.RouteTimeout = orDefault(cfg.RouteTimeout, 15*time.Second)
	cfg.DeferredLogDelay = orDefault(cfg.DeferredLogDelay, 20*time.Millisecond)
	cfg.StreamIdleTimeout = orDefault(cfg.StreamIdleTimeout, 5*time.Minute)
	if cfg.UpstreamCluster != "" {
		if _, ok := cfg.Clusters[cfg.UpstreamCluster]; !ok {
			return nil, fmt.Errorf("host: UpstreamCluster %q is not in Clusters", cfg.UpstreamCluster)
		}
	}
	h := &Host{cfg: cfg, shared: newSharedData(), queues: newSharedQueues(),
		metrics: &metrics{byName: map[string]*metric{}}, changed: make(chan struct{}),
		callouts: map[string]int{}, closing: make(chan struct{}), served: make(chan struct{})}
	h.plugins = append(h.plugins, &Plugin{Name: cfg.PluginName, RootID: cfg.RootID, Config: cfg.PluginConfig})
	for i := range cfg.Plugins {
		h.plugins = append(h.plugins, &cfg.Plugins[i])
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.calloutCtx, h.stopCalls = context.WithCancel(h.ctx)
	h.transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext, // Envoy's connect_timeout
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
	}
	fail := func(err error) (*Host, error) {
		h.shutdown()
		return nil, &StartError{Err: err, Logs: h.Logs()}
	}
	cache := compilationCache
	if cfg.NoTerminationChecks {
		cache = uncheckedCompilationCache
	}
	h.rt = wazero.NewRuntimeWithConfig(h.ctx, wazero.NewRuntimeConfig().
		WithCompilationCache(cache).WithCloseOnContextDone(!cfg.NoTerminationChecks))
	compiled, err := h.rt.CompileModule(ctx, cfg.Module)
	if err != nil {
		return fail(fmt.Errorf("Failed to load Wasm bytecode: %w", err))
	}
	h.compiled = compiled
	if _, err := checkModule(compiled, cfg.LegacyCppHost); err != nil {
		return fail(err)
	}
	if err := registerHostModules(h.ctx, h.rt); err != nil {
		return fail(err)
	}
	base, err := h.newVM(WorkerBase, false)
	if err != nil {
		return fail(err)
	}
	base.close()
	canary, err := h.newVM(WorkerCanary, true)
	if err != nil {
		return fail(err)
	}
	canary.close()
	if h.main, err = h.newVM(WorkerMain, true); err != nil {
		return fail(err)
	}
	for i := 0; i < cfg.Workers; i++ {
		h.workers = append(h.workers, &slot{idx: i})
	}
	for _, s := range h.workers {
		v, err := h.newVM(s.idx, true)
		if err != nil {
			return fail(err)
		}
		s.set(v)
	}
	if h.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fail(err)
	}
	for range cfg.Plugins {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(err)
		}
		h.extra = append(h.extra, ln)
	}
	h.srv = &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0), ConnContext: h.connContext}
	go func() {
		defer close(h.served)
		var wg sync.WaitGroup
		for i, ln := range h.extra {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = h.srv.Serve(pluginListener{ln, i + 1})
			}()
		}
		_ = h.srv.Serve(h.ln)
		wg.Wait()
	}()
	return h, nil
}

func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// URL is the listener's base URL, e.g. "http://127.0.0.1:41234".
func (h *Host) URL() string { return "http://" + h.ln.Addr().String() }

// PluginURL is the base URL of the listener of Config.Plugins[i].
func (h *Host) PluginURL(i int) string { return "http://" + h.extra[i].Addr().String() }

// threadOf answers which VM runs on worker's thread now: the slot's current VM for a worker
// (a FAIL_RELOAD replaces it), the main-thread VM for the main thread (where the canary runs
// too), v itself otherwise.
func (h *Host) threadOf(worker int, v *vm) func() *vm {
	switch {
	case worker >= 0:
		return func() *vm {
			if cur := h.workers[worker].cur.Load(); cur != nil {
				return cur
			}
			return v // still starting
		}
	case worker == WorkerMain || worker == WorkerCanary:
		return func() *vm { return h.main }
	}
	return func() *vm { return v }
}

// pluginListener marks its connections with the plugin whose filter chain they go through.
type pluginListener struct {
	net.Listener
	plugin int
}

type pluginKey struct{}

type pluginConn struct {
	net.Conn
	plugin int
}

func (l pluginListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return pluginConn{c, l.plugin}, nil
}

// Close stops the listener (open requests end as if their clients went away), cancels
// outstanding callouts without calling back, runs on_done and on_delete on every root
// context, stops every VM and waits for every goroutine the host started.
func (h *Host) Close() error {
	h.shutdown()
	return nil
}

func (h *Host) shutdown() {
	h.once.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		if h.srv != nil {
			_ = h.srv.Close()
			<-h.served
		}
		close(h.closing)
		h.stopCalls()
		h.wg.Wait()
		h.transport.CloseIdleConnections()
		var vms []*vm
		for _, s := range h.workers {
			if s.vm != nil {
				vms = append(vms, s.vm)
			}
		}
		if h.main != nil {
			vms = append(vms, h.main)
		}
		vms = append(vms, h.retired...)
		for _, v := range vms {
			v.stop(true)
		}
		h.cancel()
		if h.rt != nil {
			_ = h.rt.Close(context.Background())
		}
	})
}

// enter registers a request handler; false once the host is closing.
func (h *Host) enter() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	return true
}

// goTrack runs fn on a goroutine that Close waits for; false (fn not run) once closing.
func (h *Host) goTrack(fn func()) bool {
	if !h.enter() {
		return false
	}
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

// slot is one worker thread: its current VM, replaced after a failure under FailReload.
type slot struct {
	idx int
	mu  sync.Mutex
	vm  *vm
	cur atomic.Pointer[vm] // vm, readable without mu (queue wake-ups look it up)
}

func (s *slot) set(v *vm) {
	s.vm = v
	s.cur.Store(v)
}

type mode int

const (
	modeFilter mode = iota
	modeBypass
	modeFailed
)

func (s *slot) get(h *Host) (*vm, mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.vm.failed.Load() {
		return s.vm, modeFilter
	}
	switch h.cfg.FailurePolicy {
	case FailOpen:
		return nil, modeBypass
	case FailReload:
		v, err := h.newVM(s.idx, true)
		if err != nil {
			h.addLog(LogError, s.idx, "reloading the failed VM failed: "+err.Error(), true)
			return nil, modeFailed
		}
		h.addLog(LogInfo, s.idx, "reloaded the failed VM", true)
		h.mu.Lock()
		h.retired = append(h.retired, s.vm)
		h.mu.Unlock()
		s.set(v)
		return v, modeFilter
	}
	return nil, modeFailed
}

type connWorkerKey struct{}

func (h *Host) connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(pluginConn); ok {
		ctx = context.WithValue(ctx, pluginKey{}, pc.plugin)
	}
	if !h.cfg.PerConnection {
		return ctx
	}
	return context.WithValue(ctx, connWorkerKey{}, int((h.rr.Add(1)-1)%uint64(len(h.workers))))
}

func (h *Host) slotFor(r *http.Request) *slot {
	if i, ok := r.Context().Value(connWorkerKey{}).(int); ok {
		return h.workers[i]
	}
	return h.workers[(h.rr.Add(1)-1)%uint64(len(h.workers))]
}

// --- observation, for tests ---

func (h *Host) addLog(level LogLevel, worker int, msg string, byHost bool) {
	if level < h.cfg.LogLevel {
		return
	}
	l := Log{Level: level, Worker: worker, Message: msg, Host: byHost}
	h.mu.Lock()
	h.logs = append(h.logs, l)
	if w := h.cfg.LogWriter; w != nil {
		fmt.Fprintf(w, "[%s] %s %s\n", workerName(worker), level, msg)
	}
	h.mu.Unlock()
	h.notify()
}

func workerName(w int) string {
	switch w {
	case WorkerMain:
		return "main"
	case WorkerCanary:
		return "canary"
	case WorkerBase:
		return "base"
	}
	return fmt.Sprintf("worker %d", w)
}

// notify wakes every WaitFor: something observable changed.
func (h *Host) notify() {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *Host) countCallout(cluster string) {
	h.mu.Lock()
	h.callouts[cluster]++
	h.mu.Unlock()
	h.notify()
}

// Logs returns every log line recorded so far, in order.
func (h *Host) Logs() []Log {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Log(nil), h.logs...)
}

// ErrTimeout is returned by WaitFor and WaitLog when the condition did not hold in time.
var ErrTimeout = errors.New("host: condition not met before the timeout")

// WaitFor waits until cond returns true, re-checking it whenever a log line, a metric, a
// callout count or shared data changes. cond must be cheap and must not block.
func (h *Host) WaitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		ch := h.changed
		h.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			if cond() {
				return nil
			}
			return ErrTimeout
		}
	}
}

// WaitLog waits for a log line (already recorded or future) matching match and returns it.
func (h *Host) WaitLog(timeout time.Duration, match func(Log) bool) (Log, error) {
	var found Log
	err := h.WaitFor(timeout, func() bool {
		for _, l := range h.Logs() {
			if match(l) {
				found = l
				return true
			}
		}
		return false
	})
	return found, err
}

// Metric returns a metric's value by name: a counter's count, a gauge's value (as its two's
// complement if negative), a histogram's number of samples.
func (h *Host) Metric(name string) (uint64, bool) {
	h.metrics.mu.Lock()
	defer h.metrics.mu.Unlock()
	m := h.metrics.byName[name]
	if m == nil {
		return 0, false
	}
	if m.kind == metricHistogram {
		return uint64(len(m.samples)), true
	}
	return uint64(m.value), true
}

// MetricNames lists the defined metrics.
func (h *Host) MetricNames() []string { return h.metrics.names() }

// SharedData reads a key of the host's vm_id store.
func (h *Host) SharedData(key string) (value []byte, cas uint32, ok bool) {
	v, c, st := h.shared.get(h.cfg.VMID, key)
	return v, c, st == statusOK
}

// SharedDataSnapshot copies the host's vm_id store.
func (h *Host) SharedDataSnapshot() map[string][]byte {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	out := map[string][]byte{}
	for k, e := range h.shared.data[h.cfg.VMID] {
		out[k] = append([]byte(nil), e.value...)
	}
	return out
}

// SharedDataBytes is the sum of key and value lengths in shared data (every vm_id).
func (h *Host) SharedDataBytes() int { b, _ := h.shared.size(); return b }

// QueueItems is the number of items and bytes waiting in shared queues (every vm_id), dead
// VMs' queues included: Envoy keeps those until the last VM of their vm_id dies.
func (h *Host) QueueItems() (items, bytes int) { return h.queues.size() }

// Reconfigure updates the configuration of plugin i (0: Config's own, then Config.Plugins) as
// Envoy does when only the plugin configuration changes (proxy-wasm-cpp-host src/wasm.cc: the
// thread-local Wasm is keyed by vm_key, which the plugin configuration is not part of;
// WasmBase::start creates a root context per plugin key, its id from allocContextId, which never
// reuses one; the canary runs per plugin key, plugin_canary_cache_; dropping the old plugin
// handle calls startShutdown, on_done then on_delete): a canary VM is started and configured
// with it and dropped, then every VM gets a new root context for it (a fresh id,
// on_configure) and the old root context gets on_done and on_delete. New requests go to the new
// root; a VM whose new configuration fails keeps serving none (it fails).
func (h *Host) Reconfigure(i int, pluginConfig []byte) error {
	if i < 0 || i >= len(h.plugins) {
		return fmt.Errorf("host: no plugin %d", i)
	}
	p := *h.plugins[i]
	p.Config = append([]byte(nil), pluginConfig...)
	h.mu.Lock()
	h.plugins[i] = &p
	h.mu.Unlock()
	canary, err := h.newVM(WorkerCanary, true)
	if err != nil {
		return err
	}
	canary.close()
	vms := []*vm{h.main}
	for _, s := range h.workers {
		vms = append(vms, s.cur.Load())
	}
	for _, v := range vms {
		if err := v.do(func() error { return v.reconfigure(i, &p) }); err != nil {
			return err
		}
	}
	return nil
}

// StepWallClock moves the wall clock the module sees (proxy_get_current_time_nanoseconds and
// WASI's realtime clock) by d, as NTP does to a running Envoy; the monotonic clock does not move.
func (h *Host) StepWallClock(d time.Duration) {
	h.wallStep.Add(int64(d))
	h.notify()
}

func (h *Host) wallNow() time.Time { return time.Now().Add(time.Duration(h.wallStep.Load())) }

// SetSharedData writes key in vm_id's shared data unconditionally, as another plugin with
// that vm_id (in Istio every WasmPlugin has vm_id "") can.
func (h *Host) SetSharedData(vmID, key string, value []byte) {
	h.shared.set(vmID, key, value, 0)
	h.notify()
}

// DeadQueues is the number of shared queues whose registrant is gone (its VM stopped, like the
// canary, or failed, or its root context was replaced by Reconfigure). Envoy keeps them, and whatever is enqueued to them, while any VM of
// their vm_id lives.
func (h *Host) DeadQueues() int { n, _ := h.queues.dead(); return n }

// DeadQueueItems is the number of items waiting in dead queues (see DeadQueues).
func (h *Host) DeadQueueItems() int { _, n := h.queues.dead(); return n }

// PollOneoffCalls is how many times any VM called WASI poll_oneoff: the call an Envoy before
// proxy-wasm-cpp-host 94091cd answers ENOSYS and forbids inside the allocator. The filter's
// runtime patch (internal/compat) keeps it at zero.
func (h *Host) PollOneoffCalls() int64 { return h.polls.Load() }

// SharedDataKeys is the number of keys in shared data (every vm_id).
func (h *Host) SharedDataKeys() int { _, k := h.shared.size(); return k }

// MemoryPages returns the linear memory size, in 64 KiB pages, of each worker's current VM
// (index = worker) followed by the main-thread VM (last).
func (h *Host) MemoryPages() []uint32 {
	out := make([]uint32, 0, len(h.workers)+1)
	for _, s := range h.workers {
		s.mu.Lock()
		out = append(out, s.vm.pages.Load())
		s.mu.Unlock()
	}
	return append(out, h.main.pages.Load())
}

// Callouts is the number of proxy_http_call dispatches to cluster that returned Ok.
func (h *Host) Callouts(cluster string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.callouts[cluster]
}

// SetClusterHealthy marks cluster as having a healthy host or none. With none, Envoy's async
// client cannot start the request and proxy_http_call returns InternalFailure at once, with no
// callback ever (source/extensions/common/wasm/context.cc, Context::httpCall: a null request
// from httpAsyncClient().send() erases the token and returns WasmResult::InternalFailure).
func (h *Host) SetClusterHealthy(cluster string, healthy bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.unhealthy == nil {
		h.unhealthy = map[string]bool{}
	}
	h.unhealthy[cluster] = !healthy
}

func (h *Host) clusterUnhealthy(cluster string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unhealthy[cluster]
}

// CalloutsTotal is the number of successful proxy_http_call dispatches to any cluster.
func (h *Host) CalloutsTotal() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.callouts {
		n += c
	}
	return n
}

// Failed reports whether worker i's current VM has failed (trapped).
func (h *Host) Failed(worker int) bool {
	s := h.workers[worker]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vm.failed.Load()
}
