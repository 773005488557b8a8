package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validJSON = `{
  "tokenEndpoint": "https://keycloak.example.com/realms/demo/protocol/openid-connect/token",
  "clientId": "token-exchange-filter",
  "clientSecretEnv": "TXF_TEST_SECRET",
  "tokenExchange": {"enabled": true, "audience": "kagenti-api"}
}`

const wasmPluginYAML = `# a comment
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata:
  name: token-exchange
  namespace: kagenti
spec:
  url: oci://ghcr.io/example/token-exchange-filter:1
  pluginConfig:
    tokenEndpoint: https://keycloak.example.com/realms/demo/protocol/openid-connect/token
    clientId: token-exchange-filter
    clientSecretEnv: TXF_TEST_SECRET
    timeoutMs: 2000
    tokenExchange:
      enabled: true
  vmConfig:
    env:
      - name: TXF_TEST_SECRET
        valueFrom: HOST
`

const bootstrapYAML = `static_resources:
  listeners:
    - name: main
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                http_filters:
                  - name: token-exchange
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        vm_config:
                          environment_variables:
                            host_env_keys: [TXF_TEST_SECRET]
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '{"tokenEndpoint": "http://127.0.0.1:18180/realms/demo/protocol/openid-connect/token", "cluster": "idp", "clientId": "c", "clientSecretEnv": "TXF_TEST_SECRET"}'
                  - name: envoy.filters.http.router
  clusters:
    - name: idp
`

// bootstrapFilter is where bootstrapYAML's Wasm filter is, as problems name it.
const bootstrapFilter = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0] (token-exchange)"

type runResult struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, stdin string, args ...string) runResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return runResult{code, out.String(), errOut.String()}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// edit replaces old, which must occur exactly once.
func edit(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func (r runResult) lines() []string {
	return strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
}

func wantRun(t *testing.T, r runResult, code int, stdoutLines ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	if stdoutLines != nil && strings.Join(r.lines(), "\n") != strings.Join(stdoutLines, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, strings.Join(stdoutLines, "\n"))
	}
}

func TestPluginJSON(t *testing.T) {
	valid := writeFile(t, "valid.json", validJSON)
	r := runCmd(t, "", valid)
	wantRun(t, r, 0, "ok: "+valid)
	if !strings.Contains(r.stderr, `note: `+valid+`: clientSecretEnv: "TXF_TEST_SECRET" is taken from the proxy's environment`) {
		t.Errorf("stderr lacks the -assume-env note:\n%s", r.stderr)
	}

	bad := writeFile(t, "bad.json", edit(t, edit(t, validJSON, `"clientId": "token-exchange-filter",`, `"clientId": "token-exchange-filter", "timeoutMs": 0, "colour": "blue",`),
		`"https://keycloak`, `"keycloak`))
	wantRun(t, runCmd(t, "", bad), 1,
		bad+`: tokenEndpoint: must be an absolute http(s) URL, got "keycloak.example.com/realms/demo/protocol/openid-connect/token"`,
		bad+`: timeoutMs: must be an integer between 1 and 60000, got 0`,
		bad+`: colour: unknown field`)

	notJSON := writeFile(t, "broken.json", `{"tokenEndpoint": `)
	wantRun(t, runCmd(t, "", notJSON), 1, notJSON+": configuration is not valid JSON")
}

// An unset audience is valid, and the note says what is sent instead.
func TestUnsetAudienceNote(t *testing.T) {
	path := writeFile(t, "noaud.json", edit(t, validJSON, `"enabled": true, "audience": "kagenti-api"`, `"enabled": true`))
	r := runCmd(t, "", path)
	wantRun(t, r, 0, "ok: "+path)
	if !strings.Contains(r.stderr, "note: "+path+": tokenExchange.audience is unset: no audience parameter is sent") {
		t.Errorf("stderr lacks the audience note:\n%s", r.stderr)
	}
	if r := runCmd(t, "", writeFile(t, "aud.json", validJSON)); strings.Contains(r.stderr, "audience is unset") {
		t.Errorf("a set audience got the note:\n%s", r.stderr)
	}
}

// refreshAheadSeconds and minLifetimeSeconds are range-checked, and a minimum lifetime no
// Keycloak token of the default lifespan can meet gets a note.
func TestRefreshFields(t *testing.T) {
	bad := writeFile(t, "refresh.json", strings.Replace(validJSON, `"tokenExchange"`, `"refreshAheadSeconds": 4000, "tokenExchange"`, 1))
	wantRun(t, runCmd(t, "", bad), 1, bad+": refreshAheadSeconds: must be an integer between 0 and 3600, got 4000")
	long := writeFile(t, "long.json", strings.Replace(validJSON, `"tokenExchange"`, `"minLifetimeSeconds": 280, "tokenExchange"`, 1))
	r := runCmd(t, "", long)
	wantRun(t, r, 0, "ok: "+long)
	if !strings.Contains(r.stderr, "minLifetimeSeconds 280: with Keycloak's default access-token lifespan") {
		t.Errorf("stderr lacks the minLifetimeSeconds note:\n%s", r.stderr)
	}
}

func TestStdin(t *testing.T) {
	wantRun(t, runCmd(t, validJSON, "-"), 0, "ok: <stdin>")
	wantRun(t, runCmd(t, `{"clientId": "c", "clientSecret": "s"}`, "-"), 1, "<stdin>: tokenEndpoint: required")
	wantRun(t, runCmd(t, wasmPluginYAML, "-"), 0, "ok: <stdin>")
}

func TestAssumeEnv(t *testing.T) {
	path := writeFile(t, "valid.json", validJSON)
	missing := path + `: clientSecretEnv: environment variable "TXF_TEST_SECRET" of the Wasm VM is not set or empty`

	t.Setenv("TXF_TEST_SECRET", "")
	wantRun(t, runCmd(t, "", "-assume-env=false", path), 1, missing)
	wantRun(t, runCmd(t, "", path), 0, "ok: "+path) // assumed

	const secret = "s3cr3t-value-never-printed"
	t.Setenv("TXF_TEST_SECRET", secret)
	r := runCmd(t, "", "-assume-env=false", path)
	wantRun(t, r, 0, "ok: "+path)
	if strings.Contains(r.stderr, "assumed") {
		t.Errorf("a variable that is set must not be reported as assumed:\n%s", r.stderr)
	}

	// Neither the secret from the environment nor an inline one is ever printed.
	inline := writeFile(t, "inline.json", edit(t, validJSON, `"clientSecretEnv": "TXF_TEST_SECRET",`, `"clientSecret": "`+secret+`", "timeoutMs": -1,`))
	for _, r := range []runResult{runCmd(t, "", "-assume-env=false", path, inline), runCmd(t, wasmPluginYAML, "-assume-env=false", "-")} {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("the secret was printed:\n%s%s", r.stdout, r.stderr)
		}
	}
}

func TestWasmPlugin(t *testing.T) {
	wantRun(t, runCmd(t, "", writeFile(t, "wp.yaml", wasmPluginYAML)), 0)

	where := ": WasmPlugin kagenti/token-exchange spec.pluginConfig: "
	bad := writeFile(t, "bad.yaml", edit(t, wasmPluginYAML, "timeoutMs: 2000", "timeoutMs: 2.5"))
	wantRun(t, runCmd(t, "", bad), 1, bad+where+"timeoutMs: must be an integer between 1 and 60000, got 2.5")

	// The secret must be one the VM gets: declared in vmConfig.env.
	undeclared := writeFile(t, "undeclared.yaml", edit(t, wasmPluginYAML, "- name: TXF_TEST_SECRET", "- name: OTHER"))
	wantRun(t, runCmd(t, "", undeclared), 1, undeclared+where+`clientSecretEnv: environment variable "TXF_TEST_SECRET" `+
		`of the Wasm VM is not set or empty (declare it in spec.vmConfig.env with valueFrom: HOST)`)
	inline := writeFile(t, "inline.yaml", edit(t, wasmPluginYAML, "valueFrom: HOST", "value: from-the-resource"))
	wantRun(t, runCmd(t, "", "-assume-env=false", inline), 0)

	missing := writeFile(t, "missing.yaml", edit(t, wasmPluginYAML, "  pluginConfig:\n", "  pluginConfigs:\n"))
	if r := runCmd(t, "", missing); r.code != 1 || !strings.Contains(r.stdout, where+"configuration is not valid JSON: it is empty") {
		t.Errorf("a WasmPlugin without pluginConfig: %+v", r)
	}

	// Several documents: the WasmPlugin among other kinds, and a List.
	stream := "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n---\n" +
		edit(t, wasmPluginYAML, "timeoutMs: 2000", "timeoutMs: 0") + "---\n"
	wantRun(t, runCmd(t, stream, "-"), 1, "<stdin>"+where+"timeoutMs: must be an integer between 1 and 60000, got 0")
	list := `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
	  "metadata": {"name": "a", "namespace": "n"}, "spec": {"pluginConfig": {"clientId": "c"}}}]}`
	if r := runCmd(t, list, "-"); r.code != 1 || !strings.Contains(r.stdout, "<stdin>: WasmPlugin n/a spec.pluginConfig: tokenEndpoint: required") {
		t.Errorf("a List holding a WasmPlugin: %+v", r)
	}
}

func TestBootstrap(t *testing.T) {
	wantRun(t, runCmd(t, "", writeFile(t, "envoy.yaml", bootstrapYAML)), 0)

	unknown := writeFile(t, "unknown.yaml", edit(t, bootstrapYAML, `"cluster": "idp"`, `"cluster": "keycloak"`))
	wantRun(t, runCmd(t, "", unknown), 1, unknown+": "+bootstrapFilter+
		`: cluster: no cluster "keycloak" in static_resources.clusters: every callout would fail with BadArgument`)

	// Without "cluster" the plugin uses Istio's naming, which a plain Envoy lacks.
	derived := writeFile(t, "derived.yaml", edit(t, bootstrapYAML, `"cluster": "idp", `, ``))
	if r := runCmd(t, "", derived); r.code != 1 || !strings.Contains(r.stdout, `no cluster "outbound|18180||127.0.0.1"`) ||
		!strings.Contains(r.stdout, "Istio-style default") {
		t.Errorf("a derived cluster name missing from the bootstrap: %+v", r)
	}

	// Clusters from CDS: an unknown static name is no longer a finding.
	cds := writeFile(t, "cds.yaml", edit(t, bootstrapYAML, `"cluster": "idp"`, `"cluster": "keycloak"`)+
		"dynamic_resources:\n  cds_config: {ads: {}}\n")
	wantRun(t, runCmd(t, "", cds), 0)

	noEnv := writeFile(t, "noenv.yaml", edit(t, bootstrapYAML, "host_env_keys: [TXF_TEST_SECRET]", "host_env_keys: [OTHER]"))
	wantRun(t, runCmd(t, "", noEnv), 1, noEnv+": "+bootstrapFilter+`: clientSecretEnv: environment variable "TXF_TEST_SECRET" `+
		`of the Wasm VM is not set or empty (list it in vm_config.environment_variables.host_env_keys)`)
	keyValues := writeFile(t, "kv.yaml", edit(t, bootstrapYAML, "host_env_keys: [TXF_TEST_SECRET]", "key_values: {TXF_TEST_SECRET: inline}"))
	wantRun(t, runCmd(t, "", "-assume-env=false", keyValues), 0)

	bad := writeFile(t, "bad.yaml", edit(t, bootstrapYAML, `"clientId": "c"`, `"clientId": ""`))
	wantRun(t, runCmd(t, "", bad), 1, bad+": "+bootstrapFilter+": clientId: must not be empty")

	notString := writeFile(t, "any.yaml", edit(t, bootstrapYAML, "google.protobuf.StringValue", "google.protobuf.Duration"))
	if r := runCmd(t, "", notString); r.code != 1 || !strings.Contains(r.stdout, "configuration: unsupported type") {
		t.Errorf("a configuration that is no StringValue: %+v", r)
	}

	// The same bootstrap as JSON.
	js := `{"static_resources": {"clusters": [], "listeners": [{"filter_chains": [{"filters": [{"typed_config": {"http_filters": [{"name": "w",
	  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": {"configuration": {
	  "@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"}}}}]}}]}]}]}}`
	if r := runCmd(t, js, "-"); r.code != 1 || !strings.Contains(r.stdout, "http_filters[0] (w): tokenEndpoint: required") {
		t.Errorf("a JSON bootstrap: %+v", r)
	}
}

func TestShippedConfigs(t *testing.T) {
	envoy := filepath.Join("..", "..", "envoy-config", "envoy.yaml")
	wasm := filepath.Join("..", "..", "envoy-config", "istio", "wasmplugin.yaml")
	wantRun(t, runCmd(t, "", envoy, wasm), 0, "ok: "+envoy, "ok: "+wasm)

	// The other Istio resources hold no plugin configuration: nothing to check is a usage error.
	for _, f := range []string{"serviceentry.yaml", "destinationrule.yaml"} {
		r := runCmd(t, "", filepath.Join("..", "..", "envoy-config", "istio", f))
		if r.code != 2 || !strings.Contains(r.stderr, "nothing to check") {
			t.Errorf("%s: %+v", f, r)
		}
	}
}

func TestUsageAndExitStatus(t *testing.T) {
	valid := writeFile(t, "valid.json", validJSON)
	invalid := writeFile(t, "invalid.json", `{}`)
	missing := filepath.Join(t.TempDir(), "missing.json")

	if r := runCmd(t, ""); r.code != 2 || !strings.Contains(r.stderr, "usage: validate-config") {
		t.Errorf("no arguments: %+v", r)
	}
	if r := runCmd(t, "", "-no-such-flag", valid); r.code != 2 {
		t.Errorf("unknown flag: %+v", r)
	}
	if r := runCmd(t, "", "-h"); r.code != 0 || !strings.Contains(r.stderr, "-assume-env") {
		t.Errorf("-h: %+v", r)
	}
	if r := runCmd(t, "", missing); r.code != 2 || !strings.Contains(r.stderr, "missing.json") {
		t.Errorf("missing file: %+v", r)
	}
	if r := runCmd(t, "", writeFile(t, "empty.yaml", "# nothing\n")); r.code != 2 {
		t.Errorf("empty file: %+v", r)
	}

	// Every file is checked; the worst outcome decides: usage/IO 2 > invalid 1 > valid 0.
	r := runCmd(t, "", valid, invalid)
	wantRun(t, r, 1)
	if !strings.Contains(r.stdout, "ok: "+valid) || !strings.Contains(r.stdout, invalid+": tokenEndpoint: required") {
		t.Errorf("valid then invalid:\n%s", r.stdout)
	}
	r = runCmd(t, "", invalid, missing, valid)
	wantRun(t, r, 2)
	if !strings.Contains(r.stdout, "ok: "+valid) {
		t.Errorf("files after a missing one must still be checked:\n%s", r.stdout)
	}
}
