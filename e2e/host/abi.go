package host

import (
	"context"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// hostFunc is one function the host provides to modules. The list below is the single source
// for registration and for the import check, so a module can import exactly what Envoy ≥ 1.39
// registers (proxy-wasm-cpp-host WasmBase::registerCallbacks): FOR_ALL_HOST_FUNCTIONS plus, for
// ABI 0.2.x, proxy_continue_stream and proxy_close_stream (and proxy_get_log_level for 0.2.1),
// pthread_equal and emscripten_notify_memory_growth, and FOR_ALL_WASI_FUNCTIONS under both
// wasi_unstable and wasi_snapshot_preview1. Signatures are Envoy's (Word → i32, 64-bit → i64).
type hostFunc struct {
	module  string // "env", or "wasi" for both WASI module names
	name    string
	params  []api.ValueType
	results []api.ValueType
	onlyABI string // non-empty: provided only for this ABI version
	fn      func(v *vm, s []uint64)
}

const (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

func ints(n int) []api.ValueType {
	t := make([]api.ValueType, n)
	for i := range t {
		t[i] = i32
	}
	return t
}

var ret1 = ints(1)

// envFunc declares a proxy-wasm host call taking n i32 words and returning a status word.
func envFunc(name string, n int, fn func(v *vm, s []uint64) uint32) hostFunc {
	return hostFunc{module: "env", name: name, params: ints(n), results: ret1,
		fn: func(v *vm, s []uint64) { s[0] = uint64(fn(v, s)) }}
}

func w(s []uint64, i int) uint32 { return uint32(s[i]) }

func envFuncs() []hostFunc {
	fs := []hostFunc{
		envFunc("proxy_log", 3, hLog),
		envFunc("proxy_get_status", 3, hGetStatus),
		envFunc("proxy_set_property", 4, hSetProperty),
		envFunc("proxy_get_property", 4, hGetProperty),
		envFunc("proxy_send_local_response", 8, hSendLocalResponse),
		envFunc("proxy_get_shared_data", 5, hGetSharedData),
		envFunc("proxy_set_shared_data", 5, hSetSharedData),
		envFunc("proxy_register_shared_queue", 3, hRegisterQueue),
		envFunc("proxy_resolve_shared_queue", 5, hResolveQueue),
		envFunc("proxy_dequeue_shared_queue", 3, hDequeue),
		envFunc("proxy_enqueue_shared_queue", 3, hEnqueue),
		envFunc("proxy_get_header_map_value", 5, hGetHeaderValue),
		envFunc("proxy_add_header_map_value", 5, hAddHeaderValue),
		envFunc("proxy_replace_header_map_value", 5, hReplaceHeaderValue),
		envFunc("proxy_remove_header_map_value", 3, hRemoveHeaderValue),
		envFunc("proxy_get_header_map_pairs", 3, hGetHeaderPairs),
		envFunc("proxy_set_header_map_pairs", 3, hSetHeaderPairs),
		envFunc("proxy_get_header_map_size", 2, hGetHeaderSize),
		envFunc("proxy_get_buffer_status", 3, hGetBufferStatus),
		envFunc("proxy_get_buffer_bytes", 5, hGetBufferBytes),
		envFunc("proxy_set_buffer_bytes", 5, hSetBufferBytes),
		envFunc("proxy_http_call", 10, hHTTPCall),
		envFunc("proxy_grpc_call", 12, unimplemented),
		envFunc("proxy_grpc_stream", 9, unimplemented),
		envFunc("proxy_grpc_close", 1, unimplemented),
		envFunc("proxy_grpc_cancel", 1, unimplemented),
		envFunc("proxy_grpc_send", 4, unimplemented),
		envFunc("proxy_set_tick_period_milliseconds", 1, func(v *vm, s []uint64) uint32 { v.setTick(w(s, 0)); return statusOK }),
		envFunc("proxy_get_current_time_nanoseconds", 1, func(v *vm, s []uint64) uint32 {
			return okOr(v.putU64(w(s, 0), uint64(v.h.wallNow().UnixNano())))
		}),
		envFunc("proxy_define_metric", 4, hDefineMetric),
		{module: "env", name: "proxy_increment_metric", params: []api.ValueType{i32, i64}, results: ret1,
			fn: func(v *vm, s []uint64) { s[0] = uint64(hIncrementMetric(v, w(s, 0), int64(s[1]))) }},
		{module: "env", name: "proxy_record_metric", params: []api.ValueType{i32, i64}, results: ret1,
			fn: func(v *vm, s []uint64) { s[0] = uint64(hRecordMetric(v, w(s, 0), s[1])) }},
		envFunc("proxy_get_metric", 2, hGetMetric),
		envFunc("proxy_set_effective_context", 1, hSetEffectiveContext),
		// proxy_done acts only on a root context whose on_done returned false at shutdown; this
		// host never defers a shutdown, so (like Envoy in that case) it answers NotFound.
		envFunc("proxy_done", 0, func(*vm, []uint64) uint32 { return statusNotFound }),
		envFunc("proxy_call_foreign_function", 6, hCallForeign),
		envFunc("proxy_continue_stream", 1, hContinueStream),
		envFunc("proxy_close_stream", 1, hCloseStream),
		{module: "env", name: "pthread_equal", params: ints(2), results: ret1,
			fn: func(_ *vm, s []uint64) { s[0] = b2u(w(s, 0) == w(s, 1)) }},
		{module: "env", name: "emscripten_notify_memory_growth", params: ints(1), fn: func(*vm, []uint64) {}},
	}
	lvl := envFunc("proxy_get_log_level", 1, func(v *vm, s []uint64) uint32 {
		return okOr(v.putU32(w(s, 0), uint32(v.h.cfg.LogLevel)))
	})
	lvl.onlyABI = abi021
	return append(fs, lvl)
}

func unimplemented(*vm, []uint64) uint32 { return statusUnimplemented }

func okOr(ok bool) uint32 {
	if ok {
		return statusOK
	}
	return statusInvalidMemoryAccess
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// mayCall enforces the restricted-callback rule for the host function full ("module.name").
func (v *vm) mayCall(full string) error {
	if v.restrict != nil && !v.restrict[full] {
		v.h.addLog(LogError, v.worker, "restricted host call: "+full, true)
		return errRestricted
	}
	return nil
}

// registerHostModules instantiates env, wasi_unstable and wasi_snapshot_preview1 in rt. Every
// function first enforces the restricted-callback rule (a trap named "restricted_callback").
func registerHostModules(ctx context.Context, rt wazero.Runtime) error {
	builders := map[string]wazero.HostModuleBuilder{}
	add := func(module string, f hostFunc) {
		b := builders[module]
		if b == nil {
			b = rt.NewHostModuleBuilder(module)
			builders[module] = b
		}
		full, impl := module+"."+f.name, f.fn
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
			v := ctx.Value(vmKey{}).(*vm)
			if err := v.mayCall(full); err != nil {
				panic(err)
			}
			impl(v, stack)
		}), f.params, f.results).Export(f.name)
	}
	for _, f := range allHostFuncs() {
		if f.module == "wasi" {
			add("wasi_unstable", f)
			add("wasi_snapshot_preview1", f)
		} else {
			add(f.module, f)
		}
	}
	for name, b := range builders {
		if _, err := b.Instantiate(ctx); err != nil {
			return fmt.Errorf("instantiating host module %s: %w", name, err)
		}
	}
	return nil
}

func allHostFuncs() []hostFunc { return append(envFuncs(), wasiFuncs()...) }

// ABI versions, read from the export that names them (BytecodeUtil::getAbiVersion).
const (
	abi010 = "proxy_abi_version_0_1_0"
	abi020 = "proxy_abi_version_0_2_0"
	abi021 = "proxy_abi_version_0_2_1"
)

// moduleCallbacks are the exports Envoy looks up with their signatures (ABI 0.2.x); a present
// export with another signature fails the load ("Bad function signature").
var moduleCallbacks = map[string][2][]api.ValueType{
	"_initialize":                 {nil, nil},
	"_start":                      {nil, nil},
	"malloc":                      {ints(1), ints(1)},
	"proxy_on_memory_allocate":    {ints(1), ints(1)},
	"proxy_on_context_create":     {ints(2), nil},
	"proxy_on_vm_start":           {ints(2), ints(1)},
	"proxy_on_configure":          {ints(2), ints(1)},
	"proxy_on_tick":               {ints(1), nil},
	"proxy_on_queue_ready":        {ints(2), nil},
	"proxy_on_request_headers":    {ints(3), ints(1)},
	"proxy_on_response_headers":   {ints(3), ints(1)},
	"proxy_on_http_call_response": {ints(5), nil},
	"proxy_on_done":               {ints(1), ints(1)},
	"proxy_on_log":                {ints(1), nil},
	"proxy_on_delete":             {ints(1), nil},
}

// checkModule does what Envoy does before it runs a module: find the ABI version, find the
// allocator, check callback signatures, and check that every import is provided with the same
// signature (v8.cc V8::link). It reports the first problem in Envoy's words.
// legacyWASI is FOR_ALL_WASI_FUNCTIONS of proxy-wasm-cpp-host before 94091cd (its parent,
// include/proxy-wasm/exports.h): the WASI functions an older Envoy provides. 94091cd added the
// rest of WASI preview 1 (path_*, fd_filestat_*, sock_*, ...).
var legacyWASI = map[string]bool{"args_get": true, "args_sizes_get": true, "clock_time_get": true,
	"environ_get": true, "environ_sizes_get": true, "fd_close": true, "fd_fdstat_get": true,
	"fd_fdstat_set_flags": true, "fd_prestat_dir_name": true, "fd_prestat_get": true, "fd_read": true,
	"fd_seek": true, "fd_write": true, "path_open": true, "poll_oneoff": true, "proc_exit": true,
	"random_get": true, "sched_yield": true}

func checkModule(cm wazero.CompiledModule, legacy bool) (string, error) {
	exports := cm.ExportedFunctions()
	abi := ""
	for _, v := range []string{abi021, abi020, abi010} {
		if _, ok := exports[v]; ok {
			abi = v
			break
		}
	}
	switch abi {
	case "":
		return "", fmt.Errorf("Missing or unknown Proxy-Wasm ABI version")
	case abi010:
		return "", fmt.Errorf("Proxy-Wasm ABI 0.1.0 is not supported by this test host (Envoy still loads it)")
	}
	if exports["malloc"] == nil && exports["proxy_on_memory_allocate"] == nil {
		return "", fmt.Errorf("Wasm module is missing malloc function.")
	}
	for name, sig := range moduleCallbacks {
		f := exports[name]
		if f != nil && (!sameTypes(f.ParamTypes(), sig[0]) || !sameTypes(f.ResultTypes(), sig[1])) {
			return "", fmt.Errorf("Bad function signature for: %s", name)
		}
	}
	provided := map[string]hostFunc{}
	for _, f := range allHostFuncs() {
		if f.onlyABI != "" && f.onlyABI != abi {
			continue
		}
		if f.module == "wasi" {
			if legacy && !legacyWASI[f.name] {
				continue
			}
			provided["wasi_unstable."+f.name] = f
			provided["wasi_snapshot_preview1."+f.name] = f
		} else {
			provided[f.module+"."+f.name] = f
		}
	}
	for _, imp := range cm.ImportedFunctions() {
		mod, name, _ := imp.Import()
		f, ok := provided[mod+"."+name]
		if !ok {
			return "", fmt.Errorf("Failed to load Wasm module due to a missing import: %s.%s", mod, name)
		}
		if !sameTypes(imp.ParamTypes(), f.params) || !sameTypes(imp.ResultTypes(), f.results) {
			return "", fmt.Errorf("Failed to load Wasm module due to an import type mismatch: %s.%s, want: %s -> %s, but host exports: %s -> %s",
				mod, name, typeList(imp.ParamTypes()), typeList(imp.ResultTypes()), typeList(f.params), typeList(f.results))
		}
	}
	for _, m := range cm.ImportedMemories() {
		mod, name, _ := m.Import()
		return "", fmt.Errorf("imported memory %s.%s is not supported by this test host", mod, name)
	}
	return abi, nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typeList(t []api.ValueType) string {
	s := "("
	for i, x := range t {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(x)
	}
	return s + ")"
}

// --- proxy-wasm host calls (src/exports.cc, Envoy's source/extensions/common/wasm/context.cc) ---

func hLog(v *vm, s []uint64) uint32 {
	level := w(s, 0)
	if level > uint32(LogCritical) {
		return statusBadArgument
	}
	msg, ok := v.readString(w(s, 1), w(s, 2))
	if !ok {
		return statusInvalidMemoryAccess
	}
	v.h.addLog(LogLevel(level), v.worker, msg, false)
	return statusOK
}

func hGetStatus(v *vm, s []uint64) uint32 {
	if !v.putU32(w(s, 0), v.status) {
		return statusInvalidMemoryAccess
	}
	return v.copyOut([]byte(v.statusMsg), w(s, 1), w(s, 2))
}

func hSendLocalResponse(v *vm, s []uint64) uint32 {
	_, ok1 := v.read(w(s, 1), w(s, 2)) // details: recorded by Envoy in the stream info only
	body, ok2 := v.read(w(s, 3), w(s, 4))
	hdrs, ok3 := v.read(w(s, 5), w(s, 6))
	if !ok1 || !ok2 || !ok3 {
		return statusInvalidMemoryAccess
	}
	if st := v.target(); st != nil {
		code, extra := w(s, 0), parsePairs(hdrs).lower()
		v.after = append(v.after, func() { st.sendLocal(code, body, extra) })
	}
	v.stopIter = true
	return statusOK
}

func hGetSharedData(v *vm, s []uint64) uint32 {
	key, ok := v.readString(w(s, 0), w(s, 1))
	if !ok {
		return statusInvalidMemoryAccess
	}
	val, cas, st := v.h.shared.get(v.h.cfg.VMID, key)
	if st != statusOK {
		return st
	}
	if st := v.copyOut(val, w(s, 2), w(s, 3)); st != statusOK {
		return st
	}
	return okOr(v.putU32(w(s, 4), cas))
}

func hSetSharedData(v *vm, s []uint64) uint32 {
	key, ok1 := v.readString(w(s, 0), w(s, 1))
	val, ok2 := v.read(w(s, 2), w(s, 3))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := v.h.shared.set(v.h.cfg.VMID, key, val, w(s, 4))
	v.h.notify()
	return st
}

func hRegisterQueue(v *vm, s []uint64) uint32 {
	name, ok := v.readString(w(s, 0), w(s, 1))
	if !ok {
		return statusInvalidMemoryAccess
	}
	// on_queue_ready goes to the root context, also when a stream registers
	// (ContextBase::registerSharedQueue: isRootContext() ? id_ : parent_context_id_).
	tok := v.h.queues.register(v.h.cfg.VMID, name, v, v.rootOf(v.current).id)
	return okOr(v.putU32(w(s, 2), tok))
}

func hResolveQueue(v *vm, s []uint64) uint32 {
	vmID, ok1 := v.readString(w(s, 0), w(s, 1))
	name, ok2 := v.readString(w(s, 2), w(s, 3))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	if vmID == "" {
		vmID = v.h.cfg.VMID
	}
	tok := v.h.queues.resolve(vmID, name)
	if tok == 0 {
		return statusNotFound
	}
	return okOr(v.putU32(w(s, 4), tok))
}

func hDequeue(v *vm, s []uint64) uint32 {
	item, st := v.h.queues.dequeue(w(s, 0))
	if st != statusOK {
		return st
	}
	return v.copyOut(item, w(s, 1), w(s, 2))
}

func hEnqueue(v *vm, s []uint64) uint32 {
	data, ok := v.read(w(s, 1), w(s, 2))
	if !ok {
		return statusInvalidMemoryAccess
	}
	return v.h.queues.enqueue(w(s, 0), data)
}

// Header map types (WasmHeaderMapType).
const (
	mapRequestHeaders   = 0
	mapResponseHeaders  = 2
	mapCallRespHeaders  = 6
	mapTypeMax          = 7
	bufferTypeMax       = 8
	bufPluginConfig     = 7
	bufVMConfig         = 6
	bufCallResponseBody = 4
)

// constMap is Context::getConstMap: request headers exist while on_request_headers runs and
// while the request is held (until it continues), response headers likewise, both again
// (read-only) during on_log, callout response headers only during the callout callback. Root
// contexts have no request or response. Trailers and gRPC metadata are never available.
func (v *vm) constMap(t uint32) (pairs, bool) {
	st := v.target()
	switch t {
	case mapRequestHeaders:
		if st != nil && (st.reqOpen || st.logPhase) {
			return st.req, true
		}
	case mapResponseHeaders:
		if st != nil && (st.respOpen || (st.logPhase && st.resp != nil)) {
			return st.resp, true
		}
	case mapCallRespHeaders:
		if v.callResp != nil && v.callResp.headers != nil {
			return v.callResp.headers, true
		}
	}
	return nil, false
}

// mutableMap is Context::getMap: only request and response headers, only while open.
func (v *vm) mutableMap(t uint32) *pairs {
	st := v.target()
	if st == nil || st.logPhase {
		return nil
	}
	switch {
	case t == mapRequestHeaders && st.reqOpen:
		return &st.req
	case t == mapResponseHeaders && st.respOpen:
		return &st.resp
	}
	return nil
}

func hGetHeaderValue(v *vm, s []uint64) uint32 {
	if w(s, 0) > mapTypeMax {
		return statusBadArgument
	}
	key, ok := v.readString(w(s, 1), w(s, 2))
	if !ok {
		return statusInvalidMemoryAccess
	}
	m, ok := v.constMap(w(s, 0))
	if !ok {
		if st := v.target(); st != nil && st.logPhase {
			return statusNotFound
		}
		return statusBadArgument
	}
	val, found := m.get(key)
	if !found {
		return statusNotFound
	}
	return v.copyOut([]byte(val), w(s, 3), w(s, 4))
}

func mutateHeaders(v *vm, s []uint64, withValue bool, op func(p *pairs, k, val string)) uint32 {
	if w(s, 0) > mapTypeMax {
		return statusBadArgument
	}
	key, ok := v.readString(w(s, 1), w(s, 2))
	val := ""
	if withValue {
		var ok2 bool
		val, ok2 = v.readString(w(s, 3), w(s, 4))
		ok = ok && ok2
	}
	if !ok {
		return statusInvalidMemoryAccess
	}
	m := v.mutableMap(w(s, 0))
	if m == nil {
		return statusBadArgument
	}
	op(m, key, val)
	return statusOK
}

func hAddHeaderValue(v *vm, s []uint64) uint32 {
	return mutateHeaders(v, s, true, func(p *pairs, k, val string) { p.add(k, val) })
}

func hReplaceHeaderValue(v *vm, s []uint64) uint32 {
	return mutateHeaders(v, s, true, func(p *pairs, k, val string) { p.replace(k, val) })
}

func hRemoveHeaderValue(v *vm, s []uint64) uint32 {
	return mutateHeaders(v, s, false, func(p *pairs, k, _ string) { p.remove(k) })
}

func hGetHeaderPairs(v *vm, s []uint64) uint32 {
	if w(s, 0) > mapTypeMax {
		return statusBadArgument
	}
	m, _ := v.constMap(w(s, 0))
	if len(m) == 0 {
		return v.copyOut(nil, w(s, 1), w(s, 2))
	}
	return v.copyOut(m.marshal(), w(s, 1), w(s, 2))
}

func hSetHeaderPairs(v *vm, s []uint64) uint32 {
	if w(s, 0) > mapTypeMax {
		return statusBadArgument
	}
	data, ok := v.read(w(s, 1), w(s, 2))
	if !ok {
		return statusInvalidMemoryAccess
	}
	m := v.mutableMap(w(s, 0))
	if m == nil {
		return statusBadArgument
	}
	*m = parsePairs(data).lower()
	return statusOK
}

func hGetHeaderSize(v *vm, s []uint64) uint32 {
	if w(s, 0) > mapTypeMax {
		return statusBadArgument
	}
	m := v.mutableMap(w(s, 0))
	if m == nil {
		return statusBadArgument
	}
	return okOr(v.putU32(w(s, 1), uint32(m.byteSize())))
}

// buffer is Context::getBuffer. Body callbacks are not driven by this host, so request,
// response, network and gRPC buffers are always empty.
func (v *vm) buffer(t uint32) ([]byte, bool) {
	switch t {
	case bufVMConfig:
		return v.h.cfg.VMConfig, true
	case bufPluginConfig:
		return v.rootOf(v.current).plugin.Config, v.showPlug
	case bufCallResponseBody:
		if v.callResp != nil && v.callResp.headers != nil {
			return v.callResp.body, true
		}
		return nil, false
	}
	return nil, true
}

func hGetBufferBytes(v *vm, s []uint64) uint32 {
	if w(s, 0) > bufferTypeMax {
		return statusBadArgument
	}
	buf, ok := v.buffer(w(s, 0))
	if !ok {
		return statusNotFound
	}
	start, length := uint64(w(s, 1)), uint64(w(s, 2))
	if start > uint64(len(buf)) {
		length = 0
	} else if start+length > uint64(len(buf)) {
		length = uint64(len(buf)) - start
	}
	if length == 0 {
		return okOr(v.putU32(w(s, 3), 0) && v.putU32(w(s, 4), 0))
	}
	return v.copyOut(buf[start:start+length], w(s, 3), w(s, 4))
}

func hGetBufferStatus(v *vm, s []uint64) uint32 {
	if w(s, 0) > bufferTypeMax {
		return statusBadArgument
	}
	buf, ok := v.buffer(w(s, 0))
	if !ok {
		return statusNotFound
	}
	return okOr(v.putU32(w(s, 1), uint32(len(buf))) && v.putU32(w(s, 2), 0))
}

func hSetBufferBytes(v *vm, s []uint64) uint32 {
	if w(s, 0) > bufferTypeMax {
		return statusBadArgument
	}
	if _, ok := v.buffer(w(s, 0)); !ok {
		return statusNotFound
	}
	if _, ok := v.read(w(s, 3), w(s, 4)); !ok {
		return statusInvalidMemoryAccess
	}
	return statusBadArgument // no mutable buffer exists without body callbacks
}

func hHTTPCall(v *vm, s []uint64) uint32 {
	cluster, ok1 := v.readString(w(s, 0), w(s, 1))
	hdrs, ok2 := v.read(w(s, 2), w(s, 3))
	body, ok3 := v.read(w(s, 4), w(s, 5))
	_, ok4 := v.read(w(s, 6), w(s, 7)) // trailers: Envoy's callouts never carry them here
	if !ok1 || !ok2 || !ok3 || !ok4 || !v.putU32(w(s, 9), 0) {
		return statusInvalidMemoryAccess
	}
	tok, st := v.httpCall(cluster, parsePairs(hdrs).lower(), body, w(s, 8))
	v.putU32(w(s, 9), tok)
	return st
}

func hDefineMetric(v *vm, s []uint64) uint32 {
	kind := w(s, 0)
	if kind > metricHistogram {
		return statusBadArgument
	}
	name, ok := v.readString(w(s, 1), w(s, 2))
	if !ok {
		return statusInvalidMemoryAccess
	}
	m := v.h.metrics.define(kind, name)
	if m.kind != kind {
		return statusBadArgument
	}
	v.nextMet[kind] += 4
	id := v.nextMet[kind] | kind
	v.metricIDs[id] = m
	return okOr(v.putU32(w(s, 3), id))
}

func hIncrementMetric(v *vm, id uint32, offset int64) uint32 {
	m := v.metricIDs[id]
	switch id & 3 {
	case metricCounter:
		if m == nil {
			return statusNotFound
		}
		if offset <= 0 {
			return statusBadArgument
		}
	case metricGauge:
		if m == nil {
			return statusNotFound
		}
	default:
		return statusBadArgument
	}
	v.h.metrics.mu.Lock()
	m.value += offset
	v.h.metrics.mu.Unlock()
	v.h.notify()
	return statusOK
}

func hRecordMetric(v *vm, id uint32, value uint64) uint32 {
	m := v.metricIDs[id]
	if m == nil {
		return statusNotFound
	}
	v.h.metrics.mu.Lock()
	switch m.kind {
	case metricCounter:
		m.value += int64(value)
	case metricGauge:
		m.value = int64(value)
	case metricHistogram:
		m.samples = append(m.samples, value)
	}
	v.h.metrics.mu.Unlock()
	v.h.notify()
	return statusOK
}

func hGetMetric(v *vm, s []uint64) uint32 {
	id := w(s, 0)
	if id&3 == metricHistogram || id&3 == 3 {
		return statusBadArgument
	}
	m := v.metricIDs[id]
	if m == nil {
		return statusNotFound
	}
	v.h.metrics.mu.Lock()
	val := m.value
	v.h.metrics.mu.Unlock()
	return okOr(v.putU64(w(s, 1), uint64(val)))
}

func hSetEffectiveContext(v *vm, s []uint64) uint32 {
	id := w(s, 0)
	if id != 0 && !v.exists(id) {
		return statusBadArgument // exports.cc: getContext(id) == nullptr
	}
	v.effective = id
	return statusOK
}

func hCallForeign(v *vm, s []uint64) uint32 {
	_, ok1 := v.read(w(s, 0), w(s, 1))
	_, ok2 := v.read(w(s, 2), w(s, 3))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	return statusNotFound // no foreign function is registered
}

// Stream types (WasmStreamType).
const (
	streamRequest  = 0
	streamResponse = 1
	streamTypeMax  = 3
)

// hContinueStream is Context::continueStream: the resume runs after the VM call returns, and
// the request headers stop being accessible at once. From a root context (no effective stream)
// it does nothing and still answers Ok.
func hContinueStream(v *vm, s []uint64) uint32 {
	t := w(s, 0)
	if t != streamRequest && t != streamResponse {
		return statusBadArgument // also Downstream/Upstream: no network filter here
	}
	if st := v.target(); st != nil {
		if t == streamRequest {
			v.after = append(v.after, st.continueRequest)
		} else {
			v.after = append(v.after, st.continueResponse)
		}
		st.reqOpen = false
	}
	return statusOK
}

// hCloseStream is Context::closeStream: resets the HTTP stream at once.
func hCloseStream(v *vm, s []uint64) uint32 {
	t := w(s, 0)
	if t > streamTypeMax {
		return statusBadArgument
	}
	if st := v.target(); st != nil && (t == streamRequest || t == streamResponse) {
		st.reset()
	}
	return statusOK
}

func hGetProperty(v *vm, s []uint64) uint32 {
	path, ok := v.readString(w(s, 0), w(s, 1))
	if !ok {
		return statusInvalidMemoryAccess
	}
	val, st := v.property(path)
	if st != statusOK {
		return st
	}
	return v.copyOut(val, w(s, 2), w(s, 3))
}

func hSetProperty(v *vm, s []uint64) uint32 {
	key, ok1 := v.readString(w(s, 0), w(s, 1))
	val, ok2 := v.read(w(s, 2), w(s, 3))
	if !ok1 || !ok2 {
		return statusInvalidMemoryAccess
	}
	st := v.target()
	if st == nil {
		return statusNotFound // no stream info in a root context
	}
	if st.props == nil {
		st.props = map[string][]byte{}
	}
	st.props[key] = val
	return statusOK
}
