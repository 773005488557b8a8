// Package host runs a proxy-wasm module the way Envoy (≥ 1.39) runs an HTTP Wasm filter, so
// that tests can drive the compiled filter over real HTTP on loopback. It imitates what
// shared/docs/ENVOY-HOST.md describes, following Envoy's and proxy-wasm-cpp-host's code
// (src/exports.cc, src/context.cc, src/wasm.cc, src/shared_data.cc, src/shared_queue.cc,
// src/v8/v8.cc and Envoy's source/extensions/common/wasm/context.cc) where the spec and the
// code differ. It is built on wazero.
//
// # What is imitated
//
// Loading: the module is compiled once and checked before anything runs: the ABI is read from
// the proxy_abi_version_0_2_0 (or _0_2_1) export, an allocator (malloc or
// proxy_on_memory_allocate) must exist, callback exports must have Envoy's signatures, and
// every import must be one Envoy provides, with Envoy's signature ("Failed to load Wasm module
// due to a missing import: env.x"). Provided are exactly FOR_ALL_HOST_FUNCTIONS, the ABI 0.2.x
// proxy_continue_stream and proxy_close_stream (proxy_get_log_level for 0.2.1),
// pthread_equal, emscripten_notify_memory_growth, and FOR_ALL_WASI_FUNCTIONS under both
// wasi_unstable and wasi_snapshot_preview1, with Envoy's WASI behaviour: stdout and stderr
// become log lines (info, error; one per fd_write), environment variables come from the VM
// configuration, no arguments, files or sockets, poll_oneoff returns at once (Envoy ≥ 1.39).
// Config.LegacyCppHost imitates the cpp-host before 94091cd: poll_oneoff answers ENOSYS and is
// not allowed inside the allocator.
//
// Start-up: _initialize runs with only logging, clock, random, args, environment and inert
// WASI calls allowed (WasmBase::startVm); any other host call traps with
// "restricted_callback", as does a WASI command's proc_exit. A base VM only initialises, a
// canary VM is started and configured then dropped, then a main-thread VM and one VM per
// worker each get their own root context: proxy_on_context_create(root, 0),
// proxy_on_vm_start, proxy_on_configure (the plugin configuration is readable only there).
// OnPluginStart therefore runs Workers+2 times. Any failure fails Start. With Config.Plugins,
// further plugin configurations share every VM, as Istio shares one VM per thread between
// WasmPlugins of equal image, VM configuration and vm_id: each has its own root context (ids
// 2, 3, ...), configuration, properties and tick timer, and its own listener (PluginURL).
// Reconfigure updates one plugin's configuration as Envoy does when the VM stays: a canary, then
// a new root context per VM (a fresh id, on_configure) and on_done, on_delete for the old one.
//
// Threads: every VM is single-threaded. It runs on its own goroutine, and every call into it
// (requests, callout answers, ticks, queue wake-ups) is posted to that loop. Host calls that
// Envoy defers until the VM call returns (resuming a stream, local replies) are deferred the
// same way; callout answers and queue wake-ups never run inside the call that caused them.
//
// Streams: requests go round-robin to the workers (or stick to their connection with
// Config.PerConnection). The request header map has the pseudo-headers :method :path
// :authority :scheme, lower-case names, and x-forwarded-proto / x-request-id added like the
// connection manager does; :path is passed on exactly as the client sent it (no normalisation,
// as a listener without normalize_path does). Returning anything but Continue from on_request_headers holds the
// whole request, body included, until proxy_continue_stream(Request) with that stream as
// effective context; request headers are readable and writable only during on_request_headers
// and while held. Responses (upstream ones, the router's 404/503/504, local replies) pass
// through on_response_headers with :status, then go to the client, body streamed and flushed
// chunk by chunk. A local reply works while held and from any callback; once response headers
// went out it resets the stream. When a stream ends, also because its client went away while
// held, on_log (headers readable again), on_done and on_delete are called, in that order
// (doDeferredStreamDestroy logs, then destroys the filters; Context::onDestroy calls onDone,
// then onDelete). Config.DeferredLog imitates HTTP/3 (QuicStatsGatherer): on_log comes after
// on_delete, where the Go SDK drops it. A deleted stream's context lingers until the host drops
// it (the next loop turn, or the deferred on_log): proxy_set_effective_context on it succeeds
// and stream calls answer Ok doing nothing, as in Envoy, whose C++ context outlives on_delete.
//
// Failures: a trap (any error from a call into the module, including a Go panic) fails the
// VM: no further call enters it. The trapping request gets 503, except under FailOpen, where
// Envoy's CHECK_FAIL lets it continue without the filter. Later requests on that worker get
// 503 (FailClosed), bypass the filter (FailOpen), or get a freshly started VM (FailReload).
// Requests already held on the failed VM stay held, as in Envoy, until their client leaves or
// the stream idle timeout (Config.StreamIdleTimeout) ends them.
//
// Callouts: proxy_http_call belongs to the calling context's root context and goes over real
// HTTP to the cluster's address. Unknown cluster, or :method, :path or :authority missing:
// BadArgument. A cluster with no healthy host (SetClusterHealthy) fails inline:
// InternalFailure and no callback (Context::httpCall).
// The answer arrives on the dispatching VM's loop as proxy_on_http_call_response(root, token,
// headers, body size, 0): with :status; 504 "upstream request timeout" after timeout_ms (0 is
// none); 503 "upstream connect error or disconnect/reset before headers. reset reason:
// connection failure" (or "connection termination" for a reset before headers); 0 headers
// and 0 body for a reset after headers or a body over Config.CalloutBodyLimit. Headers and
// body are readable only during that callback.
//
// Shared state, per Host (one Host is one Envoy process): shared data per vm_id with one
// global CAS counter (0 unconditional; ignored on a key that does not exist yet; else it must
// match or CasMismatch; empty values are values), which another plugin of the same vm_id can
// write (SetSharedData; Istio's vm_id is ""); shared queues keyed by (vm_id, name), registered
// for the calling context's root (ContextBase::registerSharedQueue), that outlive their VM
// (enqueue keeps appending; QueueItems, DeadQueues) and whose wake-ups go, asynchronously, to
// the VM that runs on the last registrant's thread now, to whatever context has the
// registrant's id there, a stream or another plugin's root included (src/shared_queue.cc,
// getThreadLocalWasm; the Go SDK panics on a stream id); metrics by name (counter, gauge,
// histogram); ticks per root context, re-armed after each on_tick. Config.TraceCalls logs every
// call into the module, so tests can check the order of callbacks. Clocks: the wall clock
// (proxy_get_current_time_nanoseconds, WASI realtime) can be stepped (StepWallClock); WASI's
// monotonic clock is one for the whole process, as Envoy's steady clock is for every thread. proxy_set_effective_context with an
// id that is not a live context answers BadArgument (exports.cc; the ABI spec says NotFound).
// Properties: plugin_name, plugin_root_id, plugin_vm_id everywhere; xds.cluster_name,
// xds.route_name, request.*, response.code, response.headers.*, source.*, destination.* in
// streams only; NotFound otherwise.
//
// # What is not imitated
//
// ABI 0.1.0 modules, gRPC calls (Unimplemented), foreign functions (NotFound, as for an
// unknown name), body and trailer callbacks (on_request_body, on_response_body and the
// trailer callbacks are never called; body buffers read as empty; the filter under test only
// touches headers), HTTP/2 and TLS (plain HTTP/1.1 on loopback), Envoy's own response headers
// (server, x-envoy-upstream-service-time) and the async client's x-envoy-* request headers,
// header order from the wire (Go's net/http does not keep it: names are sorted), log-level
// filtering (everything is recorded unless Config.LogLevel says otherwise), the FAIL_RELOAD
// back-off, and mid-body timeouts of the route (Config.RouteTimeout covers the wait for
// response headers only).
//
// # Using it in tests
//
//	h, err := host.Start(ctx, host.Config{Module: wasm, PluginConfig: conf, Workers: 2,
//		Clusters: map[string]string{"idp": idpAddr, "api": apiAddr}, UpstreamCluster: "api"})
//	defer h.Close()
//	resp, _ := http.Get(h.URL() + "/path")
//	l, err := h.WaitLog(5*time.Second, func(l host.Log) bool { return strings.Contains(l.Message, "started") })
//	err = h.WaitFor(5*time.Second, func() bool { return h.Callouts("idp") == 1 })
//
// Tests wait on conditions (WaitFor, WaitLog), never on time: every log line, metric change,
// callout dispatch and shared-data write wakes the waiters.
//
// For benchmarks, ModuleTime counts the calls into the module and the time spent inside them,
// per export and per kind of context (stream or root); StreamModuleTime sums the stream ones;
// SharedDataBytes and MemoryPages show the memory the module holds.
package host
