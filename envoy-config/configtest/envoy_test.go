package configtest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3" // StdoutAccessLog in typed_config
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"   // Router in typed_config
	wasmfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3" // UpstreamTlsContext, for an https IdP cluster
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/kagenti/token-exchange-filter/filter/config"
)

const (
	wasmFilterName   = "envoy.filters.http.wasm"
	routerFilterName = "envoy.filters.http.router"
	// The addresses of the local demo (`make run`).
	wantAdmin    = "127.0.0.1:9901"
	wantListener = "127.0.0.1:10000"
	wantUpstream = "127.0.0.1:18080"
)

// envoySetup is what checkBootstrap found in a valid bootstrap.
type envoySetup struct {
	bootstrap *bootstrapv3.Bootstrap
	plugin    *wasmv3.PluginConfig
	config    *config.Config
}

// decodeBootstrap decodes YAML into a Bootstrap the way Envoy does: every field must exist, every
// Any must name a known type, and every validation rule must hold, inside Anys too.
func decodeBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("decoding the bootstrap: %w", err)
	}
	if err := validateDeep(bs); err != nil {
		return nil, fmt.Errorf("validating the bootstrap: %w", err)
	}
	return bs, nil
}

// validateDeep runs the protoc-gen-validate rules of m and of every message packed in an Any
// within it (typed_config and the like), which m.ValidateAll alone does not reach.
func validateDeep(m proto.Message) error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	eachAny(m.ProtoReflect(), func(a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.GetTypeUrl(), err))
			return
		}
		if err := validateDeep(inner); err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// eachAny calls fn for every google.protobuf.Any set in m, outermost first, without entering them.
func eachAny(m protoreflect.Message, fn func(*anypb.Any)) {
	visit := func(mv protoreflect.Message) {
		if a, ok := mv.Interface().(*anypb.Any); ok {
			fn(a)
			return
		}
		eachAny(mv, fn)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					visit(mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i, l := 0, v.List(); i < l.Len(); i++ {
					visit(l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			visit(v.Message())
		}
		return true
	})
}

// checkBootstrap checks envoy.yaml: the demo's addresses, the Wasm filter and its VM, the plugin
// configuration (through the plugin's parser), and the IdP cluster it names.
func checkBootstrap(data []byte) (*envoySetup, error) {
	bs, err := decodeBootstrap(data)
	if err != nil {
		return nil, err
	}
	var p problems
	if a := socketAddr(bs.GetAdmin().GetAddress()); a != wantAdmin {
		p.addf("admin listens on %s, want %s", a, wantAdmin)
	}
	listeners := bs.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		p.addf("%d listeners, want 1", len(listeners))
		return nil, p.err()
	}
	if a := socketAddr(listeners[0].GetAddress()); a != wantListener {
		p.addf("listener on %s, want %s", a, wantListener)
	}
	chains := listeners[0].GetFilterChains()
	if len(chains) != 1 || len(chains[0].GetFilters()) != 1 {
		p.addf("want one filter chain with one network filter (the HTTP connection manager)")
		return nil, p.err()
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := chains[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		p.addf("network filter: %v", err)
		return nil, p.err()
	}

	// The router and the filter see one normalised form of the path (README, Threat model).
	if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() ||
		hcm.GetPathWithEscapedSlashesAction() != hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT {
		p.addf("the HTTP connection manager must set normalize_path, merge_slashes and path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT")
	}

	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range bs.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if c := r.GetRoute().GetCluster(); clusters[c] == nil {
				p.addf("route %q leads to cluster %q, which does not exist", r.GetMatch().GetPrefix(), c)
			}
		}
	}
	if got := clusterAddrs(clusters["upstream"]); !slices.Equal(got, []string{wantUpstream}) {
		p.addf("cluster upstream has endpoints %v, want [%s]", got, wantUpstream)
	}

	var names []string
	var wasmFilter *hcmv3.HttpFilter
	for _, f := range hcm.GetHttpFilters() {
		names = append(names, f.GetName())
		if f.GetName() == wasmFilterName {
			wasmFilter = f
		}
	}
	if err := checkFilterOrder(names); err != nil {
		p.addf("http_filters: %v", err)
	}
	if wasmFilter == nil {
		return nil, p.err()
	}
	w := &wasmfilterv3.Wasm{}
	if err := wasmFilter.GetTypedConfig().UnmarshalTo(w); err != nil {
		p.addf("%s: %v", wasmFilterName, err)
		return nil, p.err()
	}

	pc := w.GetConfig()
	vm := pc.GetVmConfig()
	if pc.GetName() != wantPluginID || pc.GetRootId() != wantPluginID || vm.GetVmId() != wantPluginID {
		p.addf("name %q, root_id %q, vm_id %q: want %q for all three", pc.GetName(), pc.GetRootId(), vm.GetVmId(), wantPluginID)
	}
	if vm.GetRuntime() != "envoy.wasm.runtime.v8" {
		p.addf("vm_config.runtime %q, want envoy.wasm.runtime.v8", vm.GetRuntime())
	}
	if f := vm.GetCode().GetLocal().GetFilename(); f != "build/plugin.wasm" {
		p.addf("vm_config.code.local.filename %q, want build/plugin.wasm (what make build writes)", f)
	}
	if !slices.Contains(vm.GetEnvironmentVariables().GetHostEnvKeys(), wantSecretEnv) {
		p.addf("vm_config.environment_variables.host_env_keys %v lacks %s", vm.GetEnvironmentVariables().GetHostEnvKeys(), wantSecretEnv)
	}
	if pc.GetFailurePolicy() != wasmv3.FailurePolicy_FAIL_CLOSED || pc.GetFailOpen() {
		p.addf("failure_policy %v (fail_open %v), want FAIL_CLOSED", pc.GetFailurePolicy(), pc.GetFailOpen())
	}

	sv := &wrapperspb.StringValue{}
	if err := pc.GetConfiguration().UnmarshalTo(sv); err != nil {
		p.addf("configuration must be a google.protobuf.StringValue holding the JSON: %v", err)
		return nil, p.err()
	}
	cfg, err := config.Parse([]byte(sv.GetValue()), envoyVMEnv(vm.GetEnvironmentVariables()))
	if err != nil {
		p.addf("plugin configuration: %v", err)
		return nil, p.err()
	}
	checkPluginConfig(&p, cfg)
	idp := clusters[cfg.Cluster]
	if idp == nil {
		p.addf("the plugin's cluster %q is not among the static clusters: every callout would fail with BadArgument", cfg.Cluster)
		return nil, p.err()
	}
	want := cfg.TokenEndpoint.Host + ":" + strconv.Itoa(int(cfg.TokenEndpoint.Port))
	if got := clusterAddrs(idp); len(got) == 0 || slices.ContainsFunc(got, func(a string) bool { return a != want }) {
		p.addf("cluster %q has endpoints %v, which do not match tokenEndpoint's %s", cfg.Cluster, got, want)
	}
	if tls := idp.GetTransportSocket() != nil; tls != (cfg.TokenEndpoint.Scheme == "https") {
		p.addf("cluster %q: transport_socket set %v, but tokenEndpoint is %s", cfg.Cluster, tls, cfg.TokenEndpoint.Scheme)
	}
	if len(p) > 0 {
		return nil, p.err()
	}
	return &envoySetup{bootstrap: bs, plugin: pc, config: cfg}, nil
}

// checkPluginConfig holds what both the Envoy and the Istio configuration promise.
func checkPluginConfig(p *problems, cfg *config.Config) {
	if cfg.ClientID != wantClientID {
		p.addf("clientId %q, want %q", cfg.ClientID, wantClientID)
	}
	if cfg.ClientSecretEnv != wantSecretEnv || cfg.ClientSecret != fakeSecret {
		p.addf("the client secret must come from the VM variable %s (clientSecretEnv %q)", wantSecretEnv, cfg.ClientSecretEnv)
	}
	if !cfg.TokenExchange.Enabled || cfg.TokenExchange.Audience != wantAudience {
		p.addf("tokenExchange: enabled %v, audience %q; want enabled, audience %q",
			cfg.TokenExchange.Enabled, cfg.TokenExchange.Audience, wantAudience)
	}
}

// checkFilterOrder: the Wasm filter exactly once, before the router, which is last.
func checkFilterOrder(names []string) error {
	wasm := slices.Index(names, wasmFilterName)
	switch {
	case wasm < 0:
		return fmt.Errorf("no %s filter in %v", wasmFilterName, names)
	case slices.Index(names[wasm+1:], wasmFilterName) >= 0:
		return fmt.Errorf("%s appears twice in %v", wasmFilterName, names)
	case len(names) == 0 || names[len(names)-1] != routerFilterName:
		return fmt.Errorf("the last filter must be %s, got %v", routerFilterName, names)
	}
	return nil
}

// envoyVMEnv is the environment the Wasm VM sees: key_values, and host_env_keys copied from
// Envoy's environment, where the secret is assumed to be.
func envoyVMEnv(ev *wasmv3.EnvironmentVariables) func(string) (string, bool) {
	return func(name string) (string, bool) {
		if v, ok := ev.GetKeyValues()[name]; ok {
			return v, true
		}
		if slices.Contains(ev.GetHostEnvKeys(), name) {
			return fakeSecret, true
		}
		return "", false
	}
}

func socketAddr(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	return sa.GetAddress() + ":" + strconv.Itoa(int(sa.GetPortValue()))
}

func clusterAddrs(c *clusterv3.Cluster) []string {
	var out []string
	for _, e := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range e.GetLbEndpoints() {
			out = append(out, socketAddr(lb.GetEndpoint().GetAddress()))
		}
	}
	return out
}

func TestEnvoyBootstrap(t *testing.T) {
	s, err := checkBootstrap(readConfig(t, envoyFile))
	if err != nil {
		t.Fatalf("%s:\n%v", envoyFile, err)
	}
	t.Logf("plugin %q: tokenEndpoint %s via cluster %q", s.plugin.GetName(), s.config.TokenEndpoint.URL, s.config.Cluster)
}

// TestEnvoyBootstrapCatchesBreakage breaks envoy.yaml one way at a time: each must be reported.
func TestEnvoyBootstrapCatchesBreakage(t *testing.T) {
	orig := readConfig(t, envoyFile)
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"unknown field", "stat_prefix: token_exchange_proxy", "stat_prefixx: token_exchange_proxy", []string{"unknown field", "stat_prefixx"}},
		{"unknown typed_config type", "http.router.v3.Router", "http.router.v3.Routerr", []string{"Routerr"}},
		{"rule broken at the top", "port_value: 9901", "port_value: 99010", []string{"PortValue"}},
		{"rule broken inside an Any", "stat_prefix: token_exchange_proxy", `stat_prefix: ""`, []string{"HttpConnectionManager", "StatPrefix"}},
		{"admin port", "port_value: 9901", "port_value: 9902", []string{"admin listens on 127.0.0.1:9902"}},
		{"no path normalisation", "normalize_path: true", "normalize_path: false", []string{"normalize_path"}},
		{"slashes not merged", "merge_slashes: true", "merge_slashes: false", []string{"merge_slashes"}},
		{"escaped slashes kept", "UNESCAPE_AND_REDIRECT", "KEEP_UNCHANGED", []string{"path_with_escaped_slashes_action"}},
		{"listener port", "port_value: 10000", "port_value: 10001", []string{"listener on 127.0.0.1:10001"}},
		{"upstream port", "port_value: 18080", "port_value: 18081", []string{"cluster upstream"}},
		{"route to a missing cluster", "cluster: upstream", "cluster: upstream2", []string{`cluster "upstream2", which does not exist`}},
		{"no wasm filter", "- name: envoy.filters.http.wasm", "- name: envoy.filters.http.wasm2", []string{"no envoy.filters.http.wasm filter"}},
		{"root_id", "root_id: token-exchange", "root_id: other", []string{`root_id "other"`}},
		{"runtime", "runtime: envoy.wasm.runtime.v8", "runtime: envoy.wasm.runtime.wamr", []string{"runtime"}},
		{"module path", "filename: build/plugin.wasm", "filename: plugin.wasm", []string{"filename"}},
		{"failure policy", "failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN", []string{"failure_policy FAIL_OPEN"}},
		{"configuration not a StringValue", "google.protobuf.StringValue", "google.protobuf.Value", []string{"must be a google.protobuf.StringValue"}},
		{"secret not passed to the VM", "host_env_keys: [TOKEN_EXCHANGE_CLIENT_SECRET]", "host_env_keys: [OTHER]", []string{"clientSecretEnv", "host_env_keys"}},
		{"plugin: unknown field", `"audience": "kagenti-api"`, `"audiense": "kagenti-api"`, []string{"tokenExchange.audiense: unknown field"}},
		{"plugin: audience", `"audience": "kagenti-api"`, `"audience": "kagenti"`, []string{`audience "kagenti"`}},
		{"plugin: exchange off", `"enabled": true`, `"enabled": false`, []string{"enabled false"}},
		{"plugin: client", `"clientId": "token-exchange-filter"`, `"clientId": "filter"`, []string{`clientId "filter"`}},
		{"plugin: unknown cluster", `"cluster": "idp"`, `"cluster": "keycloak"`, []string{`"keycloak" is not among the static clusters`, "BadArgument"}},
		{"IdP cluster elsewhere", "port_value: 18180", "port_value: 18181", []string{"do not match tokenEndpoint's 127.0.0.1:18180"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkBootstrap(mutate(t, orig, tc.old, tc.new))
			wantError(t, err, tc.want...)
		})
	}
}

func TestFilterOrder(t *testing.T) {
	for _, tc := range []struct {
		names []string
		ok    bool
	}{
		{[]string{wasmFilterName, routerFilterName}, true},
		{[]string{"envoy.filters.http.cors", wasmFilterName, routerFilterName}, true},
		{[]string{routerFilterName, wasmFilterName}, false},
		{[]string{wasmFilterName}, false},
		{[]string{routerFilterName}, false},
		{[]string{wasmFilterName, wasmFilterName, routerFilterName}, false},
		{nil, false},
	} {
		if err := checkFilterOrder(tc.names); (err == nil) != tc.ok {
			t.Errorf("checkFilterOrder(%v) = %v, want ok=%v", tc.names, err, tc.ok)
		}
	}
}
