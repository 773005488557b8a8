package host

import (
	"strings"
	"testing"
)

// ModuleTime counts every call into the module, by export and by kind of context, with the time
// spent inside; ResetModuleTime starts again from zero.
func TestModuleTime(t *testing.T) {
	up := newUpstream(t, echo)
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	// Start-up: _initialize in the base, canary, main-thread and worker VMs; the last three are
	// configured.
	mt := h.ModuleTime()
	if mt[CallKind{Export: "_initialize", Root: true}].Calls != 4 || mt[CallKind{Export: "proxy_on_configure", Root: true}].Calls != 3 {
		t.Errorf("module time after start: %+v", mt)
	}
	h.ResetModuleTime()
	if got := h.StreamModuleTime(); got.Calls != 0 || got.Time != 0 {
		t.Fatalf("after reset: %+v", got)
	}
	if r := do(t, h, "GET", "/plain", nil, nil); r.status != 200 {
		t.Fatalf("answer %+v", r)
	}
	waitLog(t, h, "stream done ", "path /plain")
	// on_delete follows on_log in the same loop turn as on_done; wait for it on the VM's loop.
	if err := h.WaitFor(wait, func() bool {
		return h.ModuleTime()[CallKind{Export: "proxy_on_delete"}].Calls == 1
	}); err != nil {
		t.Fatalf("no on_delete counted: %+v", h.ModuleTime())
	}
	mt = h.ModuleTime()
	for _, name := range []string{"proxy_on_context_create", "proxy_on_request_headers",
		"proxy_on_response_headers", "proxy_on_done", "proxy_on_log", "proxy_on_delete"} {
		if c := mt[CallKind{Export: name}]; c.Calls != 1 || c.Time <= 0 {
			t.Errorf("%s: %+v, want one timed call", name, c)
		}
	}
	var stream CallTime
	for k, c := range mt {
		if !k.Root {
			if !strings.HasPrefix(k.Export, "proxy_on_") {
				t.Errorf("stream call of %s", k.Export)
			}
			stream.Calls += c.Calls
			stream.Time += c.Time
		}
	}
	if got := h.StreamModuleTime(); got != stream || got.Calls != 6 {
		t.Errorf("StreamModuleTime %+v, want the six stream calls %+v", got, stream)
	}
}
