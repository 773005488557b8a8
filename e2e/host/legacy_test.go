package host

import (
	"context"
	"github.com/tetratelabs/wazero"
	"net/http"
	"strings"
	"testing"
)

// Before proxy-wasm-cpp-host 94091cd, poll_oneoff answered ENOSYS: an unpatched Go runtime that
// sleeps or collects garbage throws ("poll_oneoff failed" in netpoll, or in usleep), which
// traps the VM. The probe is built without the filter's runtime patch.
func TestLegacyHostPollOneoffIsENOSYS(t *testing.T) {
	modern := startProbe(t, Config{Workers: 1})
	if r := probe(t, modern, "sleep", nil); r.status != http.StatusOK || r.body != "slept" {
		t.Fatalf("modern host: %d %q", r.status, r.body)
	}
	legacy := startProbe(t, Config{Workers: 1, LegacyCppHost: true})
	if r := probe(t, legacy, "sleep", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("legacy host: %d %q, want the trap's 503", r.status, r.body)
	}
	trap := waitLog(t, legacy, "Function: proxy_on_request_headers failed")
	if !legacy.Failed(0) || !strings.Contains(trap.Message, "poll_oneoff") && !strings.Contains(trap.Message, "unreachable") {
		t.Errorf("trap %q, failed %v", trap.Message, legacy.Failed(0))
	}
}

// The filter's runtime patch (internal/compat) makes the same guest survive the legacy host:
// the sleep and the collection make no poll_oneoff call at all.
func TestCompatRuntimeSurvivesLegacyHost(t *testing.T) {
	cfg := Config{Workers: 1, LegacyCppHost: true, Module: guest(t, "probe-compat")}
	h := start(t, cfg)
	for i := 0; i < 3; i++ {
		if r := probe(t, h, "sleep", nil); r.status != http.StatusOK || r.body != "slept" {
			t.Fatalf("round %d: %d %q", i, r.status, r.body)
		}
	}
	if h.Failed(0) {
		t.Fatal("the patched runtime trapped")
	}
}

// Before 94091cd, poll_oneoff was not among the calls allowed while the host runs the module's
// allocator (WasmBase::allocMemory): made there, it traps "restricted_callback". The probe's
// allocator never polls, so the rule is checked where the host applies it.
func TestLegacyHostRestrictsPollDuringAllocation(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		h := startProbe(t, Config{Workers: 1, LegacyCppHost: legacy})
		v := h.workers[0].cur.Load()
		var errPoll, errWrite error
		_ = v.do(func() error {
			prev := v.restrict
			v.restrict = v.allocRestriction()
			errPoll = v.mayCall("wasi_snapshot_preview1.poll_oneoff")
			errWrite = v.mayCall("wasi_snapshot_preview1.fd_write")
			v.restrict = prev
			return nil
		})
		if (errPoll != nil) != legacy || errWrite != nil {
			t.Errorf("legacy=%v: inside the allocator poll_oneoff %v, fd_write %v", legacy, errPoll, errWrite)
		}
	}
}

// An older Envoy provides only part of WASI preview 1: a module importing more fails to load
// there ("missing import"), while the compiled filter loads.
func TestLegacyHostProvidesOnlyItsWASI(t *testing.T) {
	mod := wasmModule(imp{"wasi_snapshot_preview1", "fd_datasync", typeI32I32}, []export{
		{"proxy_abi_version_0_2_0", 0}, {"proxy_on_memory_allocate", 1}})
	rt := wazero.NewRuntime(context.Background())
	defer rt.Close(context.Background())
	cm, err := rt.CompileModule(context.Background(), mod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkModule(cm, false); err != nil {
		t.Fatalf("modern host: %v", err)
	}
	if _, err := checkModule(cm, true); err == nil || !strings.Contains(err.Error(), "missing import: wasi_snapshot_preview1.fd_datasync") {
		t.Fatalf("legacy host: %v", err)
	}
	start(t, Config{Workers: 1, LegacyCppHost: true, Module: realFilter(t),
		PluginConfig: []byte(`{"tokenEndpoint":"http://idp.example/token","cluster":"idp","clientId":"c","clientSecret":"s"}`),
		Clusters:     map[string]string{"idp": "127.0.0.1:1"}})
}
