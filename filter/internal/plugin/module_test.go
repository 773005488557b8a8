package plugin

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/kagenti/token-exchange-filter/internal/wasmstrip"
)

// What Envoy links into a module since proxy-wasm-cpp-host c4d7bb0 (2024-12-19, "add wasi
// hostcalls used by the Go SDK", the first that loads upstream-Go modules; Envoy 1.33 per
// ENVOY-HOST.md) up to 94091cd's parent 3930b7b: include/proxy-wasm/exports.h
// FOR_ALL_HOST_FUNCTIONS (identical in both) plus the ABI 0.2.x calls src/wasm.cc registers, and
// FOR_ALL_WASI_FUNCTIONS (18 functions; 94091cd added the rest of WASI preview 1). A module
// importing anything else fails to load on those Envoys with "missing import", so the compiled
// filter's imports must stay inside these.
var (
	envoyHostFunctions = set(
		"proxy_log", "proxy_get_status", "proxy_set_property", "proxy_get_property", "proxy_send_local_response",
		"proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue", "proxy_resolve_shared_queue",
		"proxy_dequeue_shared_queue", "proxy_enqueue_shared_queue", "proxy_get_header_map_value",
		"proxy_add_header_map_value", "proxy_replace_header_map_value", "proxy_remove_header_map_value",
		"proxy_get_header_map_pairs", "proxy_set_header_map_pairs", "proxy_get_header_map_size",
		"proxy_get_buffer_status", "proxy_get_buffer_bytes", "proxy_set_buffer_bytes",
		"proxy_http_call", "proxy_grpc_call", "proxy_grpc_stream", "proxy_grpc_close", "proxy_grpc_cancel",
		"proxy_grpc_send", "proxy_set_tick_period_milliseconds", "proxy_get_current_time_nanoseconds",
		"proxy_define_metric", "proxy_increment_metric", "proxy_record_metric", "proxy_get_metric",
		"proxy_set_effective_context", "proxy_done", "proxy_call_foreign_function",
		// ABI 0.2.x specific
		"proxy_continue_stream", "proxy_close_stream",
	)
	envoyWASIFunctions = set(
		"args_get", "args_sizes_get", "clock_time_get", "environ_get", "environ_sizes_get", "fd_close",
		"fd_fdstat_get", "fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get", "fd_read",
		"fd_seek", "fd_write", "path_open", "poll_oneoff", "proc_exit", "random_get", "sched_yield",
	)
)

func set(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// TestModuleLoadsInEnvoy checks the compiled module's imports and exports the way Envoy's loader
// does: every import must be provided, the ABI version export must be there, and the module
// must be a WASI reactor (c-shared), not a command whose _start would exit.
func TestModuleLoadsInEnvoy(t *testing.T) {
	wasm, err := wasmModule()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer r.Close(ctx)
	m, err := r.CompileModule(ctx, wasm)
	if err != nil {
		t.Fatal(err)
	}
	var imports []string
	for _, f := range m.ImportedFunctions() {
		module, name, _ := f.Import()
		imports = append(imports, module+"."+name)
		switch module {
		case "env":
			if !envoyHostFunctions[name] {
				t.Errorf("imports env.%s, which Envoy does not provide", name)
			}
		case "wasi_snapshot_preview1":
			if !envoyWASIFunctions[name] {
				t.Errorf("imports wasi_snapshot_preview1.%s, which Envoy does not provide", name)
			}
		default:
			t.Errorf("imports from module %q, which Envoy does not provide", module)
		}
	}
	sort.Strings(imports)
	t.Logf("%d imports: %v", len(imports), imports)
	// A memo hit tells a repeated user-token header by the header map's size (coord/headers.go):
	// the shipped module asks Envoy for it; only the emulator's build works it out from the pairs.
	if !slices.Contains(imports, "env.proxy_get_header_map_size") {
		t.Errorf("the module does not import proxy_get_header_map_size: built with the sdkemulator tag?")
	}

	exports := m.ExportedFunctions()
	// malloc is the allocator Envoy prefers (cpp-host src/wasm.cc getFunctions): the memo hit's
	// values are lent from scratch memory through it (lend_wasip1.go); without it every value is
	// a heap allocation again and nothing fails but the hit's speed.
	for _, name := range []string{"proxy_abi_version_0_2_0", "_initialize", "malloc", "proxy_on_memory_allocate",
		"proxy_on_context_create", "proxy_on_configure", "proxy_on_tick", "proxy_on_queue_ready",
		"proxy_on_http_call_response", "proxy_on_request_headers", "proxy_on_response_headers", "proxy_on_done", "proxy_on_delete"} {
		if _, ok := exports[name]; !ok {
			t.Errorf("module does not export %s", name)
		}
	}
	if _, ok := exports["_start"]; ok {
		t.Errorf("module exports _start: built without -buildmode=c-shared, it would exit and trap")
	}
	// No body or trailer callback: Envoy then never enters the VM per body chunk (make build
	// strips the SDK's, internal/wasmstrip).
	for _, name := range wasmstrip.BodyAndTrailerCallbacks {
		if _, ok := exports[name]; ok {
			t.Errorf("module exports %s: every body chunk would enter the VM", name)
		}
	}
}

// The exports are stripped because the filter has no body or trailer callback; if one is ever
// written, it must not be silently dropped: this fails first.
func TestFilterHasNoBodyOrTrailerCallback(t *testing.T) {
	fset := token.NewFileSet()
	for _, dir := range []string{".", "../coord", "../.."} {
		pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, pkg := range pkgs {
			for name, f := range pkg.Files {
				for _, d := range f.Decls {
					fn, ok := d.(*ast.FuncDecl)
					if !ok || fn.Recv == nil {
						continue
					}
					switch fn.Name.Name {
					case "OnHttpRequestBody", "OnHttpResponseBody", "OnHttpRequestTrailers", "OnHttpResponseTrailers":
						t.Errorf("%s: %s is implemented, but make build strips its export (internal/wasmstrip)", name, fn.Name.Name)
					}
				}
			}
		}
	}
}
