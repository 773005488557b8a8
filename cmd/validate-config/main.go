// Command validate-config checks token-exchange plugin configurations offline, with the parser the
// plugin itself runs at start-up (filter/config), so that a configuration it accepts is one
// the plugin accepts. Run it without arguments for its usage.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/kagenti/token-exchange-filter/filter/config"
)

const usage = `usage: validate-config [-assume-env=true|false] FILE|- [FILE...]

Checks token-exchange plugin configurations with the parser the plugin runs at start-up, and
prints every problem on its own line: the file, where in it, the field path and the problem:
  FILE: FIELD: PROBLEM                                   (a plugin configuration)
  FILE: WasmPlugin NAMESPACE/NAME spec.pluginConfig: FIELD: PROBLEM
  FILE: PATH (FILTER NAME): FIELD: PROBLEM               (a bootstrap; PATH locates the filter)
or "ok: FILE" when the file has none. "-" reads standard input.

FILE is one of:
  - a plugin configuration: the JSON object that Envoy's configuration StringValue or Istio's
    pluginConfig holds;
  - Kubernetes YAML or JSON, one or more documents: the spec.pluginConfig of every WasmPlugin is
    checked, the way Istio passes it to the plugin; other kinds are skipped;
  - an Envoy bootstrap (YAML or JSON): the configuration of every envoy.filters.http.wasm filter is
    checked, and the cluster it names must be one of static_resources.clusters (unless clusters come
    from CDS): callouts to an unknown cluster fail with BadArgument.

clientSecretEnv must name a variable the Wasm VM gets: in a bootstrap, one of the filter's
vm_config.environment_variables (host_env_keys or key_values); in a WasmPlugin, one of vmConfig.env.
A variable the VM copies from the proxy's environment (host_env_keys, valueFrom: HOST, and any
variable for a plain JSON file) is
  -assume-env=true   (the default) assumed to be set: the proxy provides it, not the machine that
                     runs this check, so the shipped configurations validate without the secret;
  -assume-env=false  looked up in this process's environment, e.g. on the proxy's host.
Secret values are never printed.

Exit status: 0 every file is valid; 1 a configuration is invalid; 2 usage error, unreadable file,
or a file with nothing to check in it.`

const (
	exitOK      = 0
	exitInvalid = 1
	exitUsage   = 2

	wasmFilterType = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
	stringValue    = "type.googleapis.com/google.protobuf.StringValue"
	bytesValue     = "type.googleapis.com/google.protobuf.BytesValue"
	structValue    = "type.googleapis.com/google.protobuf.Struct"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole command: it returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	assumeEnv := fs.Bool("assume-env", true, "treat a variable taken from the proxy's environment as set")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}

	c := &checker{assumeEnv: *assumeEnv, lookupEnv: os.LookupEnv}
	status := exitOK
	for _, arg := range fs.Args() {
		name, data, err := readInput(arg, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "validate-config: %v\n", err)
			status = max(status, exitUsage)
			continue
		}
		r := c.checkFile(data)
		for _, n := range r.notes {
			fmt.Fprintf(stderr, "note: %s: %s\n", name, n)
		}
		switch {
		case r.nothing != "":
			fmt.Fprintf(stderr, "validate-config: %s: %s\n", name, r.nothing)
			status = max(status, exitUsage)
		case len(r.problems) > 0:
			for _, p := range r.problems {
				fmt.Fprintf(stdout, "%s: %s\n", name, p)
			}
			status = max(status, exitInvalid)
		default:
			fmt.Fprintf(stdout, "ok: %s\n", name)
		}
	}
	return status
}

func readInput(arg string, stdin io.Reader) (string, []byte, error) {
	if arg == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return "<stdin>", nil, fmt.Errorf("reading standard input: %w", err)
		}
		return "<stdin>", data, nil
	}
	data, err := os.ReadFile(arg)
	return arg, data, err
}

// checker holds what every check needs to know about the environment.
type checker struct {
	assumeEnv bool
	lookupEnv func(string) (string, bool)
}

// result of one file: problems (each one line, without the file name), notes for stderr, and, when
// the file holds nothing to check, why.
type result struct {
	problems []string
	notes    []string
	nothing  string
	checked  int
}

// fail records a problem that stops one configuration from being checked further.
func (r *result) fail(where, problem string) {
	r.checked++
	r.problems = append(r.problems, where+": "+problem)
}

// vmEnv describes the environment of one Wasm VM: variables with a value in the configuration,
// and names copied from the proxy's own environment.
type vmEnv struct {
	inline   map[string]string
	fromHost []string
	// hint says where to declare a variable, for a clientSecretEnv that names none of them.
	hint string
	// any: no VM description at all (a plain plugin configuration): every name is taken from the host.
	any bool
}

// checkFile decides what the document is and checks every plugin configuration in it.
func (c *checker) checkFile(data []byte) *result {
	r := &result{}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		var doc map[string]any
		if json.Unmarshal(trimmed, &doc) != nil {
			// Meant as a plugin configuration; the parser says what is wrong with it.
			c.checkPlugin(r, "", data, vmEnv{any: true})
		} else {
			c.checkDocument(r, doc, data)
		}
	} else {
		for i, d := range splitYAML(data) {
			js, err := yaml.YAMLToJSON(d)
			if err != nil {
				r.fail(fmt.Sprintf("document %d", i+1), "not valid YAML: "+err.Error())
				continue
			}
			var doc map[string]any
			if json.Unmarshal(js, &doc) != nil || doc == nil {
				continue // empty document, or a scalar or list: nothing of ours
			}
			c.checkDocument(r, doc, nil)
		}
	}
	if r.checked == 0 {
		r.nothing = "nothing to check: no plugin configuration (JSON object), WasmPlugin, or Envoy " +
			"bootstrap with an envoy.filters.http.wasm filter"
	}
	return r
}

// checkDocument checks one decoded document. raw is the document's own bytes when it is JSON: a
// plugin configuration is then parsed exactly as written. A YAML mapping that is neither a
// Kubernetes object nor a bootstrap is skipped (a plugin configuration is JSON).
func (c *checker) checkDocument(r *result, doc map[string]any, raw []byte) {
	switch {
	case hasAny(doc, "kind", "apiVersion"):
		c.checkObject(r, doc)
	case hasAny(doc, "static_resources", "staticResources", "dynamic_resources", "dynamicResources"):
		c.checkBootstrap(r, doc)
	case raw != nil:
		c.checkPlugin(r, "", raw, vmEnv{any: true})
	}
}

// checkObject handles a Kubernetes object: a WasmPlugin, or a List of objects.
func (c *checker) checkObject(r *result, obj map[string]any) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	if kind == "List" {
		items, _ := obj["items"].([]any)
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				c.checkObject(r, m)
			}
		}
		return
	}
	if kind != "WasmPlugin" || !strings.HasPrefix(apiVersion, "extensions.istio.io/") {
		return
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	where := "WasmPlugin " + name
	if ns != "" {
		where = "WasmPlugin " + ns + "/" + name
	}
	where += " spec.pluginConfig"

	spec, _ := obj["spec"].(map[string]any)
	env := vmEnv{inline: map[string]string{}, hint: "declare it in spec.vmConfig.env with valueFrom: HOST"}
	if vm, ok := spec["vmConfig"].(map[string]any); ok {
		vars, _ := vm["env"].([]any)
		for _, v := range vars {
			e, _ := v.(map[string]any)
			n, _ := e["name"].(string)
			if from, _ := e["valueFrom"].(string); from == "HOST" {
				env.fromHost = append(env.fromHost, n)
			} else {
				val, _ := e["value"].(string)
				env.inline[n] = val
			}
		}
	}

	var data []byte
	switch pc := spec["pluginConfig"].(type) {
	case nil:
		// Istio passes no configuration at all; the parser reports it as empty.
	case map[string]any:
		// Istio hands the plugin its pluginConfig (a google.protobuf.Struct) serialised as JSON.
		s, err := structpb.NewStruct(pc)
		if err == nil {
			data, err = protojson.Marshal(s)
		}
		if err != nil {
			r.fail(where, "cannot be converted to JSON: "+err.Error())
			return
		}
	default:
		r.fail(where, "must be an object (the plugin configuration, written as YAML)")
		return
	}
	c.checkPlugin(r, where, data, env)
}

// checkBootstrap finds every Wasm HTTP filter in an Envoy bootstrap and checks its configuration.
func (c *checker) checkBootstrap(r *result, doc map[string]any) {
	clusters, cds := staticClusters(doc)
	// A filter is an object with a name and a typed_config; the Wasm filter's typed_config is an
	// envoy.extensions.filters.http.wasm.v3.Wasm (in a listener, or in an ECDS extension config).
	walk(doc, "", func(path string, obj map[string]any) {
		tc, _ := field(obj, "typed_config", "typedConfig").(map[string]any)
		if tc == nil || tc["@type"] != wasmFilterType {
			return
		}
		where := path
		if name, _ := obj["name"].(string); name != "" {
			where += " (" + name + ")"
		}
		c.checkWasmFilter(r, where, tc, clusters, cds)
	})
}

// checkWasmFilter checks the configuration of one Wasm filter; where names the filter.
func (c *checker) checkWasmFilter(r *result, where string, wasm map[string]any, clusters []string, cds bool) {
	pc, _ := wasm["config"].(map[string]any)

	env := vmEnv{inline: map[string]string{}, hint: "list it in vm_config.environment_variables.host_env_keys"}
	vm, _ := field(pc, "vm_config", "vmConfig").(map[string]any)
	if ev, ok := field(vm, "environment_variables", "environmentVariables").(map[string]any); ok {
		if keys, ok := field(ev, "host_env_keys", "hostEnvKeys").([]any); ok {
			for _, k := range keys {
				if s, ok := k.(string); ok {
					env.fromHost = append(env.fromHost, s)
				}
			}
		}
		if kv, ok := field(ev, "key_values", "keyValues").(map[string]any); ok {
			for k, v := range kv {
				s, _ := v.(string)
				env.inline[k] = s
			}
		}
	}

	var data []byte
	if conf, ok := pc["configuration"].(map[string]any); ok {
		switch conf["@type"] {
		case stringValue:
			s, _ := conf["value"].(string)
			data = []byte(s)
		case bytesValue:
			s, _ := conf["value"].(string)
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				r.fail(where, "configuration: BytesValue is not valid base64")
				return
			}
			data = b
		case structValue:
			b, err := json.Marshal(conf["value"])
			if err != nil {
				r.fail(where, "configuration: "+err.Error())
				return
			}
			data = b
		default:
			r.fail(where, fmt.Sprintf("configuration: unsupported type %v (use google.protobuf.StringValue "+
				"holding the JSON)", conf["@type"]))
			return
		}
	}

	cfg := c.checkPlugin(r, where, data, env)
	if cfg == nil || cds || slices.Contains(clusters, cfg.Cluster) {
		return
	}
	msg := fmt.Sprintf("no cluster %q in static_resources.clusters: every callout would fail with BadArgument", cfg.Cluster)
	if cfg.Cluster == defaultCluster(cfg) {
		msg += " (that is the Istio-style default derived from tokenEndpoint; set \"cluster\" to the IdP's cluster)"
	}
	r.problems = append(r.problems, where+": "+config.FieldError{Field: "cluster", Problem: msg}.Error())
}

// checkPlugin runs the plugin's own parser on one configuration. It returns the Config when valid.
func (c *checker) checkPlugin(r *result, where string, data []byte, env vmEnv) *config.Config {
	r.checked++
	prefix := ""
	if where != "" {
		prefix = where + ": "
	}
	var assumed []string
	getenv := func(name string) (string, bool) {
		if v, ok := env.inline[name]; ok {
			return v, true
		}
		if !env.any && !slices.Contains(env.fromHost, name) {
			return "", false // the VM never sees this variable
		}
		if v, ok := c.lookupEnv(name); ok && v != "" {
			return v, true
		}
		if c.assumeEnv {
			assumed = append(assumed, name)
			return "assumed-by-validate-config", true
		}
		return "", false
	}
	cfg, err := config.Parse(data, getenv)
	if err != nil {
		var errs config.Errors
		if !errors.As(err, &errs) {
			r.problems = append(r.problems, prefix+err.Error())
			return nil
		}
		for _, fe := range errs {
			line := prefix + fe.Error()
			if fe.Field == "clientSecretEnv" && env.hint != "" && strings.Contains(fe.Problem, "not set") {
				line += " (" + env.hint + ")"
			}
			r.problems = append(r.problems, line)
		}
		return nil
	}
	for _, name := range assumed {
		r.notes = append(r.notes, fmt.Sprintf("%sclientSecretEnv: %q is taken from the proxy's environment "+
			"and assumed to be set there (-assume-env)", prefix, name))
	}
	if cfg.TokenExchange.Enabled && cfg.TokenExchange.Audience == "" {
		r.notes = append(r.notes, prefix+"tokenExchange.audience is unset: no audience parameter is sent, and Keycloak "+
			"issues every audience its audience mappers give the client "+strconv.Quote(cfg.ClientID)+
			" (Keycloak only narrows: an audience no mapper gives is refused, the client's own id included)")
	}
	// Keycloak's default access-token lifespan is 5 minutes: with the skew, that is how long a
	// fresh exchanged token is usable, which these settings are compared against.
	const keycloakLifespan = 300
	usable := keycloakLifespan - cfg.ExpirySkewSeconds
	minLife := cfg.MinLifetimeSeconds
	for _, rule := range cfg.Rules {
		minLife = max(minLife, rule.MinLifetimeSeconds)
	}
	if minLife >= usable {
		r.notes = append(r.notes, fmt.Sprintf("%sminLifetimeSeconds %d: with Keycloak's default access-token lifespan (300 s) "+
			"and expirySkewSeconds %d a fresh token is usable for %d s, so such requests never get a token that new; "+
			"they are sent the cached one (raise the realm's or client's access-token lifespan)", prefix, minLife, cfg.ExpirySkewSeconds, usable))
	}
	if cfg.RefreshAheadSeconds >= usable {
		r.notes = append(r.notes, fmt.Sprintf("%srefreshAheadSeconds %d: with Keycloak's default 300 s tokens every cached token "+
			"is in its refresh window at once; each key is then refreshed every half lifetime", prefix, cfg.RefreshAheadSeconds))
	}
	return cfg
}

func defaultCluster(cfg *config.Config) string {
	return "outbound|" + strconv.Itoa(int(cfg.TokenEndpoint.Port)) + "||" + cfg.TokenEndpoint.Host
}

// staticClusters lists the names of static_resources.clusters, and whether clusters may also come
// from CDS (then an unknown name is not necessarily a mistake).
func staticClusters(doc map[string]any) ([]string, bool) {
	var names []string
	if sr, ok := field(doc, "static_resources", "staticResources").(map[string]any); ok {
		cl, _ := sr["clusters"].([]any)
		for _, c := range cl {
			if m, ok := c.(map[string]any); ok {
				if n, ok := m["name"].(string); ok {
					names = append(names, n)
				}
			}
		}
	}
	dr, _ := field(doc, "dynamic_resources", "dynamicResources").(map[string]any)
	return names, field(dr, "cds_config", "cdsConfig") != nil || field(dr, "cds_resources_locator", "cdsResourcesLocator") != nil
}

// walk calls fn for every JSON object in v, with its path ("a.b[2].c").
func walk(v any, path string, fn func(path string, obj map[string]any)) {
	switch t := v.(type) {
	case map[string]any:
		fn(path, t)
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys) // deterministic order of problems
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			walk(t[k], p, fn)
		}
	case []any:
		for i, e := range t {
			walk(e, path+"["+strconv.Itoa(i)+"]", fn)
		}
	}
}

func field(m map[string]any, names ...string) any {
	if m == nil {
		return nil
	}
	for _, n := range names {
		if v, ok := m[n]; ok {
			return v
		}
	}
	return nil
}

func hasAny(m map[string]any, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// splitYAML splits a YAML stream into its documents at "---" lines.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) || bytes.HasPrefix(t, []byte("---\t")) {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
			continue
		}
		cur.Write(line)
	}
	return append(docs, cur.Bytes())
}
