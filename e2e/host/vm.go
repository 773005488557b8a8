package host

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// vm is one module instance with its own root context, like one Envoy thread's Wasm. It is
// single-threaded: every call into it (requests, callout answers, ticks, queue wake-ups) is a
// function posted to its event loop, and host calls made by the module run on that loop too, so
// the loop-owned fields below need no locks.
type vm struct {
	h      *Host
	worker int
	mod    api.Module
	fns    map[string]api.Function
	malloc api.Function
	ctx    context.Context // carries the vm to host functions
	failed atomic.Bool
	closed atomic.Bool // stopped: the canary, a replaced VM, or every VM at shutdown
	// removedRoots holds the ids of root contexts a reconfiguration replaced (readable anywhere).
	removedRoots sync.Map
	pages        atomic.Uint32

	mu      sync.Mutex // guards queue and stopped
	queue   []func()
	stopped bool
	wake    chan struct{}
	done    chan struct{}

	// Loop-owned state.
	exit      bool
	depth     int
	restrict  map[string]bool // non-nil: only these host functions may be called
	after     []func()        // Envoy's "after VM call actions"
	stopIter  bool            // set by send_local_response: the running callback counts as a stop
	current   uint32          // context of the running callback
	effective uint32          // proxy_set_effective_context
	roots     []*rootCtx      // one per plugin configuration sharing this VM, in Config order
	nextID    uint32
	streams   map[uint32]*stream
	// zombies are streams whose on_delete ran but whose C++ context still exists (Envoy's
	// deferred deletion, HTTP/3's deferred logging): proxy_set_effective_context still works
	// on them and stream calls answer Ok doing nothing.
	zombies  map[uint32]*stream
	showPlug bool // the plugin configuration is readable (on_context_create / on_configure of the root)
	// thread is the VM that currently runs on this VM's thread (itself until a FAIL_RELOAD
	// replaces it): Envoy delivers a queue's wake-ups to the thread's current Wasm by context id.
	thread    func() *vm
	callResp  *calloutResult // the callout answer, readable only during its callback
	nextCall  uint32
	calls     map[uint32]*rootCtx // pending callouts: the root each belongs to
	trapMsg   string              // first line of the trap that failed the VM
	status    uint32              // proxy_get_status
	statusMsg string
	metricIDs map[uint32]*metric
	nextMet   [3]uint32
}

type vmKey struct{}

// errRestricted is the trap of a host call made while only a few are allowed (v8.cc).
var errRestricted = errors.New("restricted_callback")

// Host calls allowed while _initialize (and main) run: WasmBase::startVm.
var startAllowed = allowSet([]string{"env.emscripten_notify_memory_growth", "env.proxy_log"},
	"fd_write", "args_sizes_get", "args_get", "environ_sizes_get", "environ_get", "clock_time_get",
	"clock_res_get", "random_get", "poll_oneoff", "fd_fdstat_get", "fd_fdstat_set_flags", "fd_advise",
	"fd_allocate", "fd_datasync", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
	"fd_filestat_set_times", "fd_pread", "fd_prestat_dir_name", "fd_prestat_get", "fd_pwrite",
	"fd_readdir", "fd_renumber", "fd_sync", "fd_tell", "path_create_directory", "path_filestat_get",
	"path_filestat_set_times", "path_link", "path_readlink", "path_remove_directory", "path_rename",
	"path_symlink", "path_unlink_file", "sock_accept", "sock_recv", "sock_send", "sock_shutdown")

// Host calls allowed while the host runs the module's allocator: WasmBase::allocMemory. Before
// proxy-wasm-cpp-host 94091cd (PR #533) poll_oneoff was not among them, so a GC the allocation
// triggers and that sleeps or polls trapped (Config.LegacyCppHost).
var (
	allocAllowed       = allowSet([]string{"env.proxy_log"}, "fd_write", "clock_time_get", "poll_oneoff")
	legacyAllocAllowed = allowSet([]string{"env.proxy_log"}, "fd_write", "clock_time_get")
)

func allowSet(env []string, wasi ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range env {
		m[n] = true
	}
	for _, n := range wasi {
		m["wasi_unstable."+n] = true
		m["wasi_snapshot_preview1."+n] = true
	}
	return m
}

// newVM instantiates the compiled module, starts its loop and runs _initialize on it; with
// plugin it also creates the root context and runs on_vm_start and on_configure.
func (h *Host) newVM(worker int, plugin bool) (*vm, error) {
	v := &vm{h: h, worker: worker, wake: make(chan struct{}, 1), done: make(chan struct{}),
		nextID: 1, streams: map[uint32]*stream{}, zombies: map[uint32]*stream{},
		calls: map[uint32]*rootCtx{}, metricIDs: map[uint32]*metric{}}
	v.thread = h.threadOf(worker, v)
	v.ctx = context.WithValue(h.ctx, vmKey{}, v)
	name := fmt.Sprintf("vm-%d", h.vmSeq.Add(1))
	mod, err := h.rt.InstantiateModule(v.ctx, h.compiled, wazero.NewModuleConfig().WithName(name).WithStartFunctions())
	if err != nil {
		return nil, fmt.Errorf("Failed to create new Wasm instance: %w", err)
	}
	v.mod = mod
	v.fns = map[string]api.Function{}
	for n := range h.compiled.ExportedFunctions() {
		v.fns[n] = mod.ExportedFunction(n)
	}
	// Envoy's order: an export named malloc first, proxy_on_memory_allocate only without one
	// (proxy-wasm-cpp-host src/wasm.cc, WasmBase::getFunctions).
	if v.malloc = v.fns["malloc"]; v.malloc == nil {
		v.malloc = v.fns["proxy_on_memory_allocate"]
	}
	v.pages.Store(mod.Memory().Size() / 65536)
	go v.loop()
	err = v.do(func() error {
		if err := v.initialize(); err != nil {
			return err
		}
		if plugin {
			return v.startPlugin()
		}
		return nil
	})
	if err != nil {
		v.close()
		return nil, err
	}
	return v, nil
}

// initialize is WasmBase::startVm: _initialize (then main or __main_void) for a reactor, _start
// for a command, with only logging, clock, random, args, environment and inert WASI calls allowed.
func (v *vm) initialize() error {
	v.restrict = startAllowed
	defer func() { v.restrict = nil }()
	type step struct {
		name string
		args []uint64
	}
	var steps []step
	if v.fns["_initialize"] != nil {
		steps = append(steps, step{"_initialize", nil})
		if v.fns["main"] != nil {
			steps = append(steps, step{"main", []uint64{0, 0}})
		} else if v.fns["__main_void"] != nil {
			steps = append(steps, step{"__main_void", nil})
		}
	} else if v.fns["_start"] != nil {
		steps = append(steps, step{"_start", nil})
	}
	for _, s := range steps {
		if _, _, ok := v.call(s.name, 0, s.args...); !ok {
			return fmt.Errorf("Failed to initialize Wasm code: %s", v.lastTrap())
		}
	}
	return nil
}

// rootCtx is one plugin configuration's root context in a VM, with its own tick timer
// (Wasm::setTimerPeriod is per root context id).
type rootCtx struct {
	id        uint32
	plugin    *Plugin
	tickEvery time.Duration
	tick      *time.Timer
}

// startPlugin is ContextBase::onStart and onConfigure for each plugin's root context; every
// plugin sharing the VM gets its own (ids 1, 2, ...).
func (v *vm) startPlugin() error {
	v.h.mu.Lock()
	plugins := append([]*Plugin(nil), v.h.plugins...)
	v.h.mu.Unlock()
	for _, p := range plugins {
		r := &rootCtx{id: v.newContextID(), plugin: p}
		v.roots = append(v.roots, r)
		if err := v.startRoot(r, len(v.roots) == 1); err != nil {
			return err
		}
	}
	return nil
}

func (v *vm) startRoot(r *rootCtx, vmStart bool) error {
	cfg := &v.h.cfg
	v.showPlug = true
	_, _, ok := v.call("proxy_on_context_create", r.id, uint64(r.id), 0)
	v.showPlug = false
	if !ok {
		return fmt.Errorf("Failed to start thread-local Wasm: %s", v.lastTrap())
	}
	if v.fns["proxy_on_vm_start"] != nil && vmStart {
		res, _, ok := v.call("proxy_on_vm_start", r.id, uint64(r.id), uint64(len(cfg.VMConfig)))
		if !ok || uint32(res) == 0 {
			return fmt.Errorf("Failed to start thread-local Wasm: proxy_on_vm_start %s", falseOrTrap(ok, v))
		}
	}
	if v.fns["proxy_on_configure"] != nil {
		v.showPlug = true
		res, _, ok := v.call("proxy_on_configure", r.id, uint64(r.id), uint64(len(r.plugin.Config)))
		v.showPlug = false
		if !ok || uint32(res) == 0 {
			return fmt.Errorf("Failed to configure thread-local Wasm plugin %q: proxy_on_configure %s", r.plugin.Name, falseOrTrap(ok, v))
		}
	}
	return nil
}

// reconfigure replaces plugin i's root context with one for p, as Envoy does on a plugin
// configuration update that keeps the VM (same code and VM configuration): the new root
// context gets a fresh id and on_configure; the old one gets on_done and on_delete, and is gone
// (its tick stops; wake-ups and callout answers for its id find no context).
func (v *vm) reconfigure(i int, p *Plugin) error {
	old := v.roots[i]
	r := &rootCtx{id: v.newContextID(), plugin: p}
	v.roots[i] = r
	if err := v.startRoot(r, false); err != nil {
		return err
	}
	if old.tick != nil {
		old.tick.Stop()
		old.tick = nil
	}
	v.roots = append(v.roots, old) // reachable for its last two callbacks only
	v.call("proxy_on_done", old.id, uint64(old.id))
	v.call("proxy_on_delete", old.id, uint64(old.id))
	v.roots = v.roots[:len(v.roots)-1]
	v.removedRoots.Store(old.id, true)
	return nil
}

// root is the root context with that id, or nil.
func (v *vm) root(id uint32) *rootCtx {
	for _, r := range v.roots {
		if r.id == id {
			return r
		}
	}
	return nil
}

// rootOf is the root context a context belongs to (itself for a root): ContextBase::root_context.
func (v *vm) rootOf(id uint32) *rootCtx {
	if r := v.root(id); r != nil {
		return r
	}
	if s := v.streams[id]; s != nil {
		return s.root
	}
	if s := v.zombies[id]; s != nil {
		return s.root
	}
	if len(v.roots) > 0 {
		return v.roots[0]
	}
	return &rootCtx{plugin: v.h.plugins[0]}
}

// exists is WasmBase::getContext(id) != nullptr: a root, a live stream, or a deleted stream
// whose C++ context has not been destroyed yet.
func (v *vm) exists(id uint32) bool {
	return v.root(id) != nil || v.streams[id] != nil || v.zombies[id] != nil
}

func falseOrTrap(ok bool, v *vm) string {
	if ok {
		return "returned false"
	}
	return "trapped: " + v.lastTrap()
}

func (v *vm) newContextID() uint32 {
	for {
		id := v.nextID
		v.nextID++
		if id != 0 && !v.exists(id) {
			return id
		}
	}
}

// call runs an exported function on behalf of context ctxID and returns its result, whether
// send_local_response asked to stop iteration, and false if it trapped. A function the module
// does not export is skipped (result 0), as Envoy skips missing callbacks. The actions host
// calls deferred (resume, local reply) run when the outermost call returns.
func (v *vm) call(name string, ctxID uint32, args ...uint64) (uint64, bool, bool) {
	if v.failed.Load() {
		return 0, false, false
	}
	f := v.fns[name]
	if f == nil {
		return 0, false, true
	}
	prevCur, prevEff := v.current, v.effective
	v.current, v.effective = ctxID, 0
	outer := v.depth == 0
	if outer && v.h.cfg.TraceCalls {
		v.h.addLog(LogTrace, v.worker, fmt.Sprintf("call %s %d", name, ctxID), true)
	}
	kind := CallKind{Export: name, Root: v.root(ctxID) != nil || (v.streams[ctxID] == nil && v.zombies[ctxID] == nil)}
	v.depth++
	begin := time.Now()
	res, err := f.Call(v.ctx, args...)
	if outer {
		v.h.timing.add(kind, time.Since(begin))
	}
	v.depth--
	v.current, v.effective = prevCur, prevEff
	v.pages.Store(v.mod.Memory().Size() / 65536)
	if err != nil {
		v.trap(name, err)
		return 0, false, false
	}
	stopped := v.stopIter
	if v.depth == 0 {
		v.stopIter = false
		for len(v.after) > 0 && !v.failed.Load() {
			a := v.after[0]
			v.after = v.after[1:]
			a()
		}
	}
	var r uint64
	if len(res) > 0 {
		r = res[0]
	}
	return r, stopped, true
}

func (v *vm) lastTrap() string { return v.trapMsg }

// trap marks the VM failed (FailState::RuntimeError): no further call enters it, its timer
// stops, and the streams and the failure policy take it from there.
func (v *vm) trap(name string, err error) {
	if v.failed.Swap(true) {
		return
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	msg = strings.TrimSuffix(msg, " (recovered by wazero)")
	v.trapMsg = msg
	v.after = nil
	v.stopTicks()
	if v.h.ctx.Err() == nil {
		v.h.addLog(LogError, v.worker, "Function: "+name+" failed: "+msg, true)
	}
}

// loop is the VM's thread.
func (v *vm) loop() {
	defer close(v.done)
	for !v.exit {
		<-v.wake
		v.mu.Lock()
		q := v.queue
		v.queue = nil
		v.mu.Unlock()
		for _, fn := range q {
			if v.exit {
				break // the rest is dropped: the VM is gone
			}
			fn()
		}
	}
	v.stopTicks()
	v.mu.Lock()
	v.stopped = true
	v.queue = nil
	v.mu.Unlock()
}

// post queues fn on the VM's loop; it never blocks and never runs fn inline.
func (v *vm) post(fn func()) {
	v.mu.Lock()
	if v.stopped {
		v.mu.Unlock()
		return
	}
	v.queue = append(v.queue, fn)
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// do runs fn on the loop and waits for it.
func (v *vm) do(fn func() error) error {
	res := make(chan error, 1)
	v.post(func() { res <- fn() })
	select {
	case err := <-res:
		return err
	case <-v.done:
		return errors.New("the VM has stopped")
	}
}

// close stops the loop (after what is queued) and releases the instance; with shutdown it
// first runs the root context's on_done and on_delete, as Envoy does when it drains a plugin.
func (v *vm) close() { v.stop(false) }

func (v *vm) stop(shutdown bool) {
	v.post(func() {
		if shutdown {
			for _, r := range v.roots {
				v.call("proxy_on_done", r.id, uint64(r.id))
				v.call("proxy_on_delete", r.id, uint64(r.id))
			}
		}
		v.exit = true
	})
	<-v.done
	v.closed.Store(true)
	_ = v.mod.Close(context.Background())
}

func (v *vm) onTick(r *rootCtx) {
	if v.failed.Load() || r.tick == nil {
		return
	}
	v.call("proxy_on_tick", r.id, uint64(r.id))
	if r.tick != nil && r.tickEvery > 0 && !v.failed.Load() {
		r.tick.Reset(r.tickEvery)
	}
}

// setTick is Wasm::setTimerPeriod for the calling context's root: 0 stops its timer, anything
// else (re)arms it; the timer is re-armed after each on_tick returns. The timer posts the tick
// to the loop, like any other event.
func (v *vm) setTick(ms uint32) {
	r := v.rootOf(v.current)
	r.tickEvery = time.Duration(ms) * time.Millisecond
	if ms == 0 {
		if r.tick != nil {
			r.tick.Stop()
			r.tick = nil
		}
		return
	}
	if r.tick == nil {
		r.tick = time.AfterFunc(r.tickEvery, func() { v.post(func() { v.onTick(r) }) })
	} else {
		r.tick.Reset(r.tickEvery)
	}
}

func (v *vm) stopTicks() {
	for _, r := range v.roots {
		if r.tick != nil {
			r.tick.Stop()
		}
	}
}

// onQueueReady is the wake-up of SharedQueue::enqueue, run on the thread's current VM: it goes
// to whatever context has the registrant's id now (WasmBase::getContext), a stream or another
// plugin's root included, and nowhere if none has.
func (v *vm) onQueueReady(ctxID, token uint32) {
	if v.failed.Load() || !v.exists(ctxID) {
		return
	}
	v.call("proxy_on_queue_ready", ctxID, uint64(ctxID), uint64(token))
}

// target is contextOrEffectiveContext: the stream a host call acts on, or nil for the root.
func (v *vm) target() *stream {
	id := v.current
	if v.effective != 0 && v.exists(v.effective) {
		id = v.effective
	}
	if s := v.streams[id]; s != nil {
		return s
	}
	return v.zombies[id] // its phase is phDone: stream calls do nothing
}

// Memory access. Out-of-bounds accesses report false (InvalidMemoryAccess / EFAULT).

func (v *vm) read(ptr, size uint32) ([]byte, bool) {
	b, ok := v.mod.Memory().Read(ptr, size)
	if !ok {
		return nil, false
	}
	return append([]byte(nil), b...), true
}

func (v *vm) readString(ptr, size uint32) (string, bool) {
	b, ok := v.mod.Memory().Read(ptr, size)
	return string(b), ok
}

func (v *vm) putU32(ptr, x uint32) bool { return v.mod.Memory().WriteUint32Le(ptr, x) }
func (v *vm) putU64(ptr uint32, x uint64) bool {
	return v.mod.Memory().WriteUint64Le(ptr, x)
}

func (v *vm) putBytes(ptr uint32, b []byte) bool { return v.mod.Memory().Write(ptr, b) }

// copyOut is WasmBase::copyToPointerSize: data goes into memory the module allocates (nothing
// is allocated for empty data: pointer 0, size 0), then pointer and size are stored.
func (v *vm) copyOut(data []byte, ptrPtr, sizePtr uint32) uint32 {
	var ptr uint32
	if len(data) > 0 {
		p, ok := v.alloc(uint32(len(data)))
		if !ok || !v.putBytes(p, data) {
			return statusInvalidMemoryAccess
		}
		ptr = p
	}
	if !v.putU32(ptrPtr, ptr) || !v.putU32(sizePtr, uint32(len(data))) {
		return statusInvalidMemoryAccess
	}
	return statusOK
}

// allocRestriction is the set of host calls allowed inside the allocator.
func (v *vm) allocRestriction() map[string]bool {
	if v.h.cfg.LegacyCppHost {
		return legacyAllocAllowed
	}
	return allocAllowed
}

// alloc calls the module's allocator with the host calls restricted as WasmBase::allocMemory
// does. A trap in it aborts the host call that needed memory, and with it the callback.
func (v *vm) alloc(size uint32) (uint32, bool) {
	if v.malloc == nil {
		return 0, false
	}
	prev := v.restrict
	v.restrict = v.allocRestriction()
	res, err := v.malloc.Call(v.ctx, uint64(size))
	v.restrict = prev
	if err != nil {
		panic(err)
	}
	p := uint32(res[0])
	if p == 0 {
		return 0, false
	}
	if _, ok := v.mod.Memory().Read(p, size); !ok {
		return 0, false
	}
	return p, true
}

func le64(x int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(x)) }
