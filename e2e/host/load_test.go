package host

import (
	"context"
	"encoding/binary"
	"errors"
	"sort"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
)

// Envoy's lists (include/proxy-wasm/exports.h): FOR_ALL_HOST_FUNCTIONS, the ABI 0.2.x
// additions, the two emscripten helpers, and FOR_ALL_WASI_FUNCTIONS.
var (
	envoyHostFunctions = strings.Fields(`log get_status set_property get_property send_local_response
		get_shared_data set_shared_data register_shared_queue resolve_shared_queue dequeue_shared_queue
		enqueue_shared_queue get_header_map_value add_header_map_value replace_header_map_value
		remove_header_map_value get_header_map_pairs set_header_map_pairs get_header_map_size
		get_buffer_status get_buffer_bytes set_buffer_bytes http_call grpc_call grpc_stream grpc_close
		grpc_cancel grpc_send set_tick_period_milliseconds get_current_time_nanoseconds define_metric
		increment_metric record_metric get_metric set_effective_context done call_foreign_function
		continue_stream close_stream`)
	envoyWASIFunctions = strings.Fields(`fd_write fd_read fd_seek fd_close fd_fdstat_get
		fd_fdstat_set_flags fd_fdstat_set_rights environ_get environ_sizes_get args_get args_sizes_get
		clock_time_get clock_res_get fd_advise fd_allocate fd_datasync fd_filestat_set_size
		fd_filestat_set_times fd_pread fd_pwrite fd_readdir fd_renumber fd_sync fd_tell
		path_create_directory path_filestat_set_times path_link path_readlink path_remove_directory
		path_rename path_symlink path_unlink_file sock_accept sock_recv sock_send sock_shutdown
		random_get sched_yield poll_oneoff proc_exit path_open fd_prestat_get fd_prestat_dir_name
		path_filestat_get fd_filestat_get`)
)

// The host provides exactly Envoy's functions: no more, no fewer.
func TestProvidesExactlyEnvoysFunctions(t *testing.T) {
	var env, wasi, want []string
	for _, f := range allHostFuncs() {
		switch {
		case f.module == "wasi":
			wasi = append(wasi, f.name)
		case f.onlyABI == "":
			env = append(env, f.name)
		}
	}
	for _, n := range envoyHostFunctions {
		want = append(want, "proxy_"+n)
	}
	want = append(want, "pthread_equal", "emscripten_notify_memory_growth")
	sameSet(t, "env", env, want)
	sameSet(t, "wasi", wasi, envoyWASIFunctions)
}

func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s functions:\n got %v\nwant %v", what, got, want)
	}
}

// Every import of the real filter is provided, with Envoy's signature.
func TestRealFilterImportsAreProvided(t *testing.T) {
	mod := realFilter(t)
	rt := wazero.NewRuntime(context.Background())
	defer rt.Close(context.Background())
	cm, err := rt.CompileModule(context.Background(), mod)
	if err != nil {
		t.Fatal(err)
	}
	abi, err := checkModule(cm, false)
	if err != nil {
		t.Fatal(err)
	}
	if abi != abi020 {
		t.Errorf("ABI %s, want %s", abi, abi020)
	}
	if len(cm.ImportedFunctions()) == 0 {
		t.Error("no imports found")
	}
}

// A module importing a function Envoy does not provide is refused before it is instantiated,
// with the import named; so are a signature mismatch and a module without an ABI export.
func TestRefusesModulesEnvoyRefuses(t *testing.T) {
	abiAndMalloc := []export{{"proxy_abi_version_0_2_0", 0}, {"proxy_on_memory_allocate", 1}}
	cases := []struct {
		name   string
		module []byte
		want   string
	}{
		{"unknown import", wasmModule(imp{"env", "proxy_make_coffee", typeVoid}, abiAndMalloc),
			"missing import: env.proxy_make_coffee"},
		{"unknown WASI import", wasmModule(imp{"wasi_snapshot_preview1", "thread_spawn", typeVoid}, abiAndMalloc),
			"missing import: wasi_snapshot_preview1.thread_spawn"},
		{"0.2.1 import under ABI 0.2.0", wasmModule(imp{"env", "proxy_get_log_level", typeI32I32}, abiAndMalloc),
			"missing import: env.proxy_get_log_level"},
		{"signature mismatch", wasmModule(imp{"env", "proxy_log", typeVoid}, abiAndMalloc),
			"import type mismatch: env.proxy_log"},
		{"no ABI export", wasmModule(imp{"env", "proxy_log", typeLog}, []export{{"proxy_on_memory_allocate", 1}}),
			"Missing or unknown Proxy-Wasm ABI version"},
		{"no allocator", wasmModule(imp{"env", "proxy_log", typeLog}, []export{{"proxy_abi_version_0_2_0", 0}}),
			"missing malloc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Start(context.Background(), Config{Module: c.module, Workers: 1})
			var se *StartError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Start: %v, want a StartError containing %q", err, c.want)
			}
		})
	}
}

// While _initialize (and so init()) runs, only logging and a few WASI calls are allowed; any
// other host call traps with "restricted_callback" and the module does not start.
func TestRestrictedCallbacksDuringInitialize(t *testing.T) {
	_, err := Start(context.Background(), Config{Module: guest(t, "forbidden"), Workers: 1})
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "restricted_callback") {
		t.Fatalf("Start: %v, want restricted_callback", err)
	}
	logged := false
	for _, l := range se.Logs {
		logged = logged || l.Message == "forbidden: logging is allowed during init"
		if strings.Contains(l.Message, "not reached") {
			t.Errorf("the module went on after the forbidden call: %q", l.Message)
		}
	}
	if !logged {
		t.Errorf("proxy_log during init was not recorded: %+v", se.Logs)
	}
}

// Built without -buildmode=c-shared the module is a WASI command: its _start ends in
// proc_exit, which is not allowed during start-up, so it traps.
func TestCommandModuleTraps(t *testing.T) {
	_, err := Start(context.Background(), Config{Module: guest(t, "command"), Workers: 1})
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "restricted_callback") {
		t.Fatalf("Start: %v, want restricted_callback", err)
	}
	found := false
	for _, l := range se.Logs {
		found = found || (l.Host && l.Message == "restricted host call: wasi_snapshot_preview1.proc_exit")
	}
	if !found {
		t.Errorf("want the refused proc_exit logged: %+v", se.Logs)
	}
}

// OnVMStart and OnPluginStart run Workers+2 times (workers, main thread, canary), each on its
// own instance; the base VM only initialises. The VM and plugin configurations are readable
// where Envoy makes them readable; root contexts see plugin_* properties but no xds.*/request.*.
func TestStartsLikeEnvoy(t *testing.T) {
	h := startProbe(t, Config{Workers: 3, PluginConfig: []byte("plugin-conf"), VMConfig: []byte("vm-conf"),
		PluginName: "probe-plugin", RootID: "probe-root", UpstreamCluster: "up", Clusters: map[string]string{"up": "127.0.0.1:1"}})
	workers := map[int]int{}
	for _, l := range h.Logs() {
		if l.Message == `plugin start: config "plugin-conf" (ok)` {
			workers[l.Worker]++
		}
	}
	want := map[int]int{0: 1, 1: 1, 2: 1, WorkerMain: 1, WorkerCanary: 1}
	if len(workers) != len(want) {
		t.Fatalf("OnPluginStart ran on %v, want %v", workers, want)
	}
	for w, n := range want {
		if workers[w] != n {
			t.Errorf("OnPluginStart ran %d times on worker %d, want %d", workers[w], w, n)
		}
	}
	if n := countLogs(h, func(l Log) bool { return l.Message == `vm start: vm config "vm-conf" (ok)` }); n != 5 {
		t.Errorf("OnVMStart saw the VM configuration %d times, want 5", n)
	}
	for _, m := range []string{`root property plugin_name = "probe-plugin" (ok)`, `root property plugin_root_id = "probe-root" (ok)`,
		`root property xds.cluster_name = "" (error status returned by host: not found)`,
		`root property request.path = "" (error status returned by host: not found)`} {
		if countLogs(h, func(l Log) bool { return l.Message == m }) != 5 {
			t.Errorf("want %q from every root context; logs: %v", m, h.Logs())
		}
	}
	if got := len(h.MemoryPages()); got != 4 {
		t.Errorf("MemoryPages has %d entries, want 3 workers + main", got)
	}
}

// A plugin that refuses its configuration stops the start (the canary fails), and the reason
// it logged is in the StartError.
func TestRefusedConfigurationFailsStart(t *testing.T) {
	_, err := Start(context.Background(), Config{Module: guest(t, "probe"), PluginConfig: []byte("refuse"), Workers: 1})
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "proxy_on_configure returned false") {
		t.Fatalf("Start: %v", err)
	}
	found := false
	for _, l := range se.Logs {
		found = found || (l.Message == "probe: refusing this configuration" && l.Worker == WorkerCanary && l.Level == LogError)
	}
	if !found {
		t.Errorf("the plugin's reason is missing from %+v", se.Logs)
	}
}

// --- a minimal wasm assembler for modules no Go compiler would produce ---

type imp struct {
	module, name string
	typ          byte
}

type export struct {
	name string
	fn   int // index among the module's own functions
}

// Function types of the assembled modules.
const (
	typeVoid    = 0 // () -> ()
	typeI32I32  = 1 // (i32) -> i32
	typeLog     = 2 // (i32, i32, i32) -> i32
	wasmI32     = 0x7f
	wasmFuncRef = 0x60
)

// wasmModule assembles a module with one imported function and two functions of its own:
// function 0 () -> () and function 1 (i32) -> i32 returning 0.
func wasmModule(im imp, exports []export) []byte {
	section := func(id byte, content []byte) []byte {
		return append(append([]byte{id}, uleb(len(content))...), content...)
	}
	name := func(s string) []byte { return append(uleb(len(s)), s...) }
	types := []byte{3,
		wasmFuncRef, 0, 0,
		wasmFuncRef, 1, wasmI32, 1, wasmI32,
		wasmFuncRef, 3, wasmI32, wasmI32, wasmI32, 1, wasmI32}
	imports := append([]byte{1}, name(im.module)...)
	imports = append(append(imports, name(im.name)...), 0, im.typ)
	funcs := []byte{2, typeVoid, typeI32I32}
	exps := uleb(len(exports))
	for _, e := range exports {
		exps = append(append(exps, name(e.name)...), 0, byte(1+e.fn)) // the import is function 0
	}
	code := []byte{2,
		2, 0, 0x0b, // () {}
		4, 0, 0x41, 0, 0x0b} // (i32) { return 0 }
	out := binary.LittleEndian.AppendUint32([]byte("\x00asm"), 1)
	for _, s := range []struct {
		id byte
		b  []byte
	}{{1, types}, {2, imports}, {3, funcs}, {7, exps}, {10, code}} {
		out = append(out, section(s.id, s.b)...)
	}
	return out
}

func uleb(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
