package configtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	extensions "istio.io/api/extensions/v1alpha1"
	mesh "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3" // networking.istio.io/v1 and v1beta1 are aliases of these types
	"sigs.k8s.io/yaml"

	"github.com/kagenti/token-exchange-filter/filter/config"
)

// object is a Kubernetes object with its spec still encoded.
type object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   objectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// decodeObject decodes a YAML Kubernetes object of the given kind (one of apiVersions) and its spec
// into spec, as strictly as the API server does with its schema: unknown fields are errors.
func decodeObject(data []byte, kind string, apiVersions []string, spec proto.Message) (*object, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var o object
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("decoding the %s: %w", kind, err)
	}
	if o.Kind != kind || !slices.Contains(apiVersions, o.APIVersion) {
		return nil, fmt.Errorf("%s %s, want kind %s with apiVersion one of %v", o.APIVersion, o.Kind, kind, apiVersions)
	}
	if o.Metadata.Name == "" || o.Metadata.Namespace == "" {
		return nil, fmt.Errorf("%s: metadata.name and metadata.namespace must be set", kind)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(o.Spec, spec); err != nil {
		return nil, fmt.Errorf("decoding the %s spec: %w", kind, err)
	}
	return &o, nil
}

// istioFiles are the Istio resources, read or mutated by a test.
type istioFiles struct {
	wasmPlugin, serviceEntry, destinationRule, statsMatcher, secretEnvPatch []byte
}

func readIstioFiles(t *testing.T) istioFiles {
	return istioFiles{
		wasmPlugin:      readConfig(t, wasmPluginFile),
		serviceEntry:    readConfig(t, serviceEntry),
		destinationRule: readConfig(t, destinationRule),
		statsMatcher:    readConfig(t, statsMatcher),
		secretEnvPatch:  readConfig(t, secretEnvPatch),
	}
}

// checkIstio checks the Istio resources one by one and against each other. It returns the plugin
// configuration of the WasmPlugin when everything holds.
func checkIstio(f istioFiles) (*config.Config, error) {
	var p problems
	wp := &extensions.WasmPlugin{}
	wpObj, err := decodeObject(f.wasmPlugin, "WasmPlugin", []string{"extensions.istio.io/v1alpha1"}, wp)
	if err != nil {
		return nil, err
	}
	cfg := checkWasmPlugin(&p, wpObj, wp)
	if cfg == nil {
		return nil, p.err()
	}

	se := &networking.ServiceEntry{}
	seObj, err := decodeObject(f.serviceEntry, "ServiceEntry", []string{"networking.istio.io/v1", "networking.istio.io/v1beta1"}, se)
	if err != nil {
		p.addf("%v", err)
	} else {
		checkServiceEntry(&p, se, cfg)
		if seObj.Metadata.Namespace != wpObj.Metadata.Namespace {
			p.addf("ServiceEntry in namespace %q, WasmPlugin in %q: the gateway must see the entry", seObj.Metadata.Namespace, wpObj.Metadata.Namespace)
		}
	}

	dr := &networking.DestinationRule{}
	drObj, err := decodeObject(f.destinationRule, "DestinationRule", []string{"networking.istio.io/v1", "networking.istio.io/v1beta1"}, dr)
	if err != nil {
		p.addf("%v", err)
	} else {
		checkDestinationRule(&p, dr, cfg, wp)
		if drObj.Metadata.Namespace != wpObj.Metadata.Namespace {
			p.addf("DestinationRule in namespace %q, WasmPlugin in %q: the gateway must see the rule", drObj.Metadata.Namespace, wpObj.Metadata.Namespace)
		}
	}

	checkStatsMatcher(&p, f.statsMatcher)
	checkSecretEnvPatch(&p, f.secretEnvPatch, cfg.ClientSecretEnv)
	if len(p) > 0 {
		return nil, p.err()
	}
	return cfg, nil
}

// checkWasmPlugin checks the WasmPlugin and runs its pluginConfig through the plugin's parser, the
// way Istio hands it over (the Struct as JSON) and with the VM environment vmConfig.env gives it.
func checkWasmPlugin(p *problems, obj *object, wp *extensions.WasmPlugin) *config.Config {
	if !strings.HasPrefix(wp.GetUrl(), "oci://") || !strings.Contains(wp.GetUrl(), "/token-exchange-filter:") {
		p.addf("url %q, want oci://<registry>/token-exchange-filter:<tag>", wp.GetUrl())
	}
	if wp.GetImagePullPolicy() != extensions.PullPolicy_IfNotPresent {
		p.addf("imagePullPolicy %v, want IfNotPresent", wp.GetImagePullPolicy())
	}
	if wp.GetPhase() != extensions.PluginPhase_AUTHN {
		p.addf("phase %v, want AUTHN", wp.GetPhase())
	}
	if wp.GetPriority() == nil {
		p.addf("priority is not set")
	}
	// FAIL_CLOSE is the enum's zero value: require it spelled out, so that the file says so.
	var spec struct {
		FailStrategy string `json:"failStrategy"`
	}
	if err := json.Unmarshal(obj.Spec, &spec); err != nil || spec.FailStrategy != "FAIL_CLOSE" || wp.GetFailStrategy() != extensions.FailStrategy_FAIL_CLOSE {
		p.addf("failStrategy %q, want FAIL_CLOSE written out", spec.FailStrategy)
	}
	if wp.GetType() != extensions.PluginType_HTTP {
		p.addf("type %v, want HTTP", wp.GetType())
	}
	if wp.GetPluginName() != wantPluginID {
		p.addf("pluginName %q, want %q (the Envoy bootstrap's root_id)", wp.GetPluginName(), wantPluginID)
	}
	if len(wp.GetSelector().GetMatchLabels()) == 0 || len(wp.GetTargetRefs()) > 0 || wp.GetTargetRef() != nil {
		p.addf("the plugin must select its proxies by selector.matchLabels")
	}

	inline := map[string]string{}
	var fromHost []string
	for _, e := range wp.GetVmConfig().GetEnv() {
		if e.GetValueFrom() == extensions.EnvValueSource_HOST {
			fromHost = append(fromHost, e.GetName())
			if e.GetValue() != "" {
				p.addf("vmConfig.env %s: valueFrom HOST takes no value", e.GetName())
			}
		} else {
			inline[e.GetName()] = e.GetValue()
		}
	}
	if !slices.Contains(fromHost, wantSecretEnv) {
		p.addf("vmConfig.env must pass %s with valueFrom: HOST (got %v from the host)", wantSecretEnv, fromHost)
	}

	js, err := protojson.Marshal(wp.GetPluginConfig())
	if err != nil {
		p.addf("pluginConfig: %v", err)
		return nil
	}
	cfg, err := config.Parse(js, func(name string) (string, bool) {
		if v, ok := inline[name]; ok {
			return v, true
		}
		if slices.Contains(fromHost, name) {
			return fakeSecret, true
		}
		return "", false
	})
	if err != nil {
		p.addf("pluginConfig: %v", err)
		return nil
	}
	checkPluginConfig(p, cfg)
	if cfg.TokenEndpoint.Scheme != "https" {
		p.addf("tokenEndpoint %s: an external IdP must be reached over https", cfg.TokenEndpoint.URL)
	}
	if want := istioCluster(cfg.TokenEndpoint.Host, cfg.TokenEndpoint.Port); cfg.Cluster != want {
		p.addf("cluster %q, want %q: the outbound cluster Istio builds for the token endpoint", cfg.Cluster, want)
	}
	return cfg
}

// checkServiceEntry: the entry must produce the cluster the plugin calls.
func checkServiceEntry(p *problems, se *networking.ServiceEntry, cfg *config.Config) {
	if se.GetLocation() != networking.ServiceEntry_MESH_EXTERNAL || se.GetResolution() != networking.ServiceEntry_DNS {
		p.addf("ServiceEntry: location %v, resolution %v; want MESH_EXTERNAL, DNS", se.GetLocation(), se.GetResolution())
	}
	var clusters []string
	for _, h := range se.GetHosts() {
		for _, port := range se.GetPorts() {
			clusters = append(clusters, istioCluster(h, uint16(port.GetNumber())))
			if h == cfg.TokenEndpoint.Host && port.GetNumber() == uint32(cfg.TokenEndpoint.Port) {
				if pr := strings.ToUpper(port.GetProtocol()); pr != "HTTPS" && pr != "TLS" {
					p.addf("ServiceEntry port %d has protocol %q; the token endpoint is https (HTTPS or TLS)", port.GetNumber(), port.GetProtocol())
				}
			}
		}
	}
	if !slices.Contains(clusters, cfg.Cluster) {
		p.addf("ServiceEntry yields clusters %v, not the plugin's %q: every callout would fail with BadArgument", clusters, cfg.Cluster)
	}
}

// checkDestinationRule: the cluster must originate TLS (SIMPLE) with the IdP's name as SNI, on the
// proxies that run the plugin.
func checkDestinationRule(p *problems, dr *networking.DestinationRule, cfg *config.Config, wp *extensions.WasmPlugin) {
	if dr.GetHost() != cfg.TokenEndpoint.Host {
		p.addf("DestinationRule host %q, want the token endpoint's %q", dr.GetHost(), cfg.TokenEndpoint.Host)
	}
	tls := dr.GetTrafficPolicy().GetTls()
	for _, pl := range dr.GetTrafficPolicy().GetPortLevelSettings() {
		if pl.GetPort().GetNumber() == uint32(cfg.TokenEndpoint.Port) && pl.GetTls() != nil {
			tls = pl.GetTls()
		}
	}
	if tls.GetMode() != networking.ClientTLSSettings_SIMPLE {
		p.addf("DestinationRule: TLS mode %v for port %d, want SIMPLE (the callout is plain HTTP until the cluster encrypts it)", tls.GetMode(), cfg.TokenEndpoint.Port)
	}
	if tls.GetSni() != cfg.TokenEndpoint.Host {
		p.addf("DestinationRule: sni %q, want %q", tls.GetSni(), cfg.TokenEndpoint.Host)
	}
	if ws := dr.GetWorkloadSelector().GetMatchLabels(); len(ws) > 0 {
		for k, v := range ws {
			if wp.GetSelector().GetMatchLabels()[k] != v {
				p.addf("DestinationRule workloadSelector %v does not select the WasmPlugin's proxies %v", ws, wp.GetSelector().GetMatchLabels())
				break
			}
		}
	}
}

// checkStatsMatcher: the pod annotation's ProxyConfig must let the filter's metrics through.
func checkStatsMatcher(p *problems, data []byte) {
	var patch struct {
		Spec struct {
			Template struct {
				Metadata objectMeta `json:"metadata"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &patch); err != nil {
		p.addf("%s: %v", statsMatcher, err)
		return
	}
	ann, ok := patch.Spec.Template.Metadata.Annotations["proxy.istio.io/config"]
	if !ok {
		p.addf("%s: no proxy.istio.io/config annotation in spec.template.metadata.annotations", statsMatcher)
		return
	}
	js, err := yaml.YAMLToJSON([]byte(ann))
	pc := &mesh.ProxyConfig{}
	if err == nil {
		err = (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, pc)
	}
	if err != nil {
		p.addf("%s: proxy.istio.io/config is not a ProxyConfig: %v", statsMatcher, err)
		return
	}
	// Envoy's names for the filter's metrics (defined as token_exchange.<name>).
	for _, metric := range []string{"wasmcustom.token_exchange.exchanges", "wasmcustom.token_exchange.cache_hits"} {
		if !slices.ContainsFunc(pc.GetProxyStatsMatcher().GetInclusionPrefixes(), func(prefix string) bool {
			return strings.HasPrefix(metric, prefix)
		}) {
			p.addf("%s: proxyStatsMatcher.inclusionPrefixes %v do not include %s", statsMatcher, pc.GetProxyStatsMatcher().GetInclusionPrefixes(), metric)
		}
	}
}

// checkSecretEnvPatch: the istio-proxy container gets the variable the plugin reads, from a Secret.
func checkSecretEnvPatch(p *problems, data []byte, envName string) {
	type envVar struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom struct {
			SecretKeyRef struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom"`
	}
	var patch struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string   `json:"name"`
						Env  []envVar `json:"env"`
					} `json:"containers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(data, &patch); err != nil {
		p.addf("%s: %v", secretEnvPatch, err)
		return
	}
	for _, c := range patch.Spec.Template.Spec.Containers {
		if c.Name != "istio-proxy" {
			continue
		}
		for _, e := range c.Env {
			ref := e.ValueFrom.SecretKeyRef
			if e.Name == envName && e.Value == "" && ref.Name != "" && ref.Key != "" {
				return
			}
		}
	}
	p.addf("%s: the istio-proxy container gets no %s from a secretKeyRef", secretEnvPatch, envName)
}

func istioCluster(host string, port uint16) string {
	return "outbound|" + strconv.Itoa(int(port)) + "||" + host
}

func TestIstioResources(t *testing.T) {
	cfg, err := checkIstio(readIstioFiles(t))
	if err != nil {
		t.Fatalf("envoy-config/istio:\n%v", err)
	}
	t.Logf("WasmPlugin: tokenEndpoint %s via cluster %q", cfg.TokenEndpoint.URL, cfg.Cluster)
}

func TestSecretEnvDocNamesTheVariable(t *testing.T) {
	if doc := readConfig(t, secretEnvDoc); !bytes.Contains(doc, []byte(wantSecretEnv)) {
		t.Errorf("%s does not mention %s", secretEnvDoc, wantSecretEnv)
	}
}

// TestIstioResourcesCatchBreakage breaks one resource one way at a time: each must be reported.
func TestIstioResourcesCatchBreakage(t *testing.T) {
	orig := readIstioFiles(t)
	wasm := func(f *istioFiles) *[]byte { return &f.wasmPlugin }
	se := func(f *istioFiles) *[]byte { return &f.serviceEntry }
	dr := func(f *istioFiles) *[]byte { return &f.destinationRule }
	stats := func(f *istioFiles) *[]byte { return &f.statsMatcher }
	secret := func(f *istioFiles) *[]byte { return &f.secretEnvPatch }
	for _, tc := range []struct {
		name     string
		file     func(*istioFiles) *[]byte
		old, new string
		want     []string
	}{
		{"WasmPlugin kind", wasm, "kind: WasmPlugin", "kind: WasmPlugins", []string{"want kind WasmPlugin"}},
		{"WasmPlugin apiVersion", wasm, "extensions.istio.io/v1alpha1", "extensions.istio.io/v1", []string{"apiVersion one of"}},
		{"WasmPlugin unknown spec field", wasm, "imagePullPolicy:", "pullPolicy:", []string{"unknown field", "pullPolicy"}},
		{"WasmPlugin unknown top-level field", wasm, "spec:\n", "specs:\n", []string{"unknown field", "specs"}},
		{"WasmPlugin url", wasm, "url: oci://", "url: https://", []string{"url"}},
		{"WasmPlugin pull policy", wasm, "imagePullPolicy: IfNotPresent", "imagePullPolicy: Always", []string{"imagePullPolicy Always"}},
		{"WasmPlugin phase", wasm, "phase: AUTHN", "phase: AUTHZ", []string{"phase AUTHZ"}},
		{"WasmPlugin priority", wasm, "priority: 100", "", []string{"priority is not set"}},
		{"WasmPlugin fail strategy", wasm, "failStrategy: FAIL_CLOSE", "failStrategy: FAIL_OPEN", []string{"failStrategy"}},
		{"WasmPlugin fail strategy implicit", wasm, "failStrategy: FAIL_CLOSE", "", []string{"failStrategy", "written out"}},
		{"WasmPlugin plugin name", wasm, "pluginName: token-exchange", "pluginName: other", []string{`pluginName "other"`}},
		{"WasmPlugin no selector", wasm, "istio: kagenti-api-gateway", "{}", []string{"selector"}},
		{"WasmPlugin env from INLINE", wasm, "valueFrom: HOST", "valueFrom: INLINE", []string{"valueFrom: HOST", "clientSecretEnv"}},
		{"WasmPlugin env renamed", wasm, "- name: TOKEN_EXCHANGE_CLIENT_SECRET", "- name: OTHER", []string{"clientSecretEnv"}},
		{"pluginConfig unknown field", wasm, "clientId:", "clientID:", []string{`clientID: unknown field (did you mean "clientId"?)`}},
		{"pluginConfig audience", wasm, "audience: kagenti-api", "audience: other", []string{`audience "other"`}},
		{"pluginConfig cluster", wasm, "cluster: outbound|443||keycloak.example.com", "cluster: outbound|8443||keycloak.example.com", []string{"outbound|8443||keycloak.example.com"}},
		{"pluginConfig plain http", wasm, "tokenEndpoint: https://", "tokenEndpoint: http://", []string{"over https"}},
		{"ServiceEntry kind", se, "kind: ServiceEntry", "kind: ServiceEntries", []string{"want kind ServiceEntry"}},
		{"ServiceEntry unknown field", se, "resolution: DNS", "resolutions: DNS", []string{"unknown field", "resolutions"}},
		{"ServiceEntry host", se, "- keycloak.example.com", "- kc.example.com", []string{"not the plugin's"}},
		{"ServiceEntry port", se, "number: 443", "number: 8443", []string{"not the plugin's"}},
		{"ServiceEntry protocol", se, "protocol: HTTPS", "protocol: HTTP", []string{`protocol "HTTP"`}},
		{"ServiceEntry location", se, "MESH_EXTERNAL", "MESH_INTERNAL", []string{"location MESH_INTERNAL"}},
		{"ServiceEntry namespace", se, "namespace: kagenti", "namespace: other", []string{`ServiceEntry in namespace "other"`}},
		{"DestinationRule host", dr, "host: keycloak.example.com", "host: kc.example.com", []string{`host "kc.example.com"`}},
		{"DestinationRule TLS mode", dr, "mode: SIMPLE", "mode: DISABLE", []string{"TLS mode DISABLE"}},
		{"DestinationRule SNI", dr, "sni: keycloak.example.com", "sni: kc.example.com", []string{`sni "kc.example.com"`}},
		{"DestinationRule unknown field", dr, "sni:", "snii:", []string{"unknown field", "snii"}},
		{"DestinationRule namespace", dr, "namespace: kagenti", "namespace: other", []string{`DestinationRule in namespace "other"`}},
		{"DestinationRule selects other proxies", dr, "spec:\n", "spec:\n  workloadSelector:\n    matchLabels: {app: other}\n", []string{"workloadSelector"}},
		{"stats prefix", stats, "- wasmcustom.token_exchange", "- wasmcustom.other", []string{"do not include wasmcustom.token_exchange"}},
		{"stats annotation", stats, "proxy.istio.io/config: |", "proxy.istio.io/configs: |", []string{"no proxy.istio.io/config annotation"}},
		{"stats not a ProxyConfig", stats, "    inclusionPrefixes:\n", "    inclusionPrefix:\n", []string{"not a ProxyConfig"}},
		{"secret env name", secret, "- name: TOKEN_EXCHANGE_CLIENT_SECRET", "- name: OTHER", []string{"gets no TOKEN_EXCHANGE_CLIENT_SECRET"}},
		{"secret env container", secret, "name: istio-proxy", "name: app", []string{"gets no TOKEN_EXCHANGE_CLIENT_SECRET"}},
		{"secret env misspelt", secret, "valueFrom:\n", "valueFrm:\n", []string{"unknown field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := orig
			b := tc.file(&f)
			*b = mutate(t, *b, tc.old, tc.new)
			_, err := checkIstio(f)
			wantError(t, err, tc.want...)
		})
	}
}

const meshPathNormalization = "istio/mesh-path-normalization.yaml"

// checkMeshPathNormalization decodes the meshConfig fragment strictly against Istio's MeshConfig
// and requires a normalisation that merges slashes (and so normalises the path).
func checkMeshPathNormalization(data []byte) error {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	var doc struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := json.Unmarshal(js, &doc); err != nil || doc.MeshConfig == nil {
		return fmt.Errorf("no meshConfig: %v", err)
	}
	var m mesh.MeshConfig
	if err := protojson.Unmarshal(doc.MeshConfig, &m); err != nil {
		return fmt.Errorf("meshConfig: %w", err)
	}
	switch n := m.GetPathNormalization().GetNormalization(); n {
	case mesh.MeshConfig_ProxyPathNormalization_MERGE_SLASHES, mesh.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES:
		return nil
	default:
		return fmt.Errorf("pathNormalization %v: want MERGE_SLASHES or DECODE_AND_MERGE_SLASHES", n)
	}
}

func TestMeshPathNormalization(t *testing.T) {
	orig := readConfig(t, meshPathNormalization)
	if err := checkMeshPathNormalization(orig); err != nil {
		t.Fatalf("%s: %v", meshPathNormalization, err)
	}
	for _, tc := range [][2]string{
		{"normalization: DECODE_AND_MERGE_SLASHES", "normalization: BASE"},
		{"normalization:", "normalisation:"},
		{"normalization: DECODE_AND_MERGE_SLASHES", "normalization: DECODE_AND_MERGE"},
	} {
		if err := checkMeshPathNormalization(mutate(t, orig, tc[0], tc[1])); err == nil {
			t.Errorf("%s → %s was accepted", tc[0], tc[1])
		}
	}
}
