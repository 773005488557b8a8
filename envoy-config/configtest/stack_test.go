package configtest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/rhysd/actionlint"
)

// The compose stack and the CI workflow cannot run here (no container engine, no GitHub): they
// are checked with the libraries of their own specifications instead.

// loadCompose parses envoy-config/compose.yaml as Docker Compose does (the Compose
// specification's reference library), with env as the only environment.
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	path := filepath.Join(repoRoot(t), "envoy-config", "compose.yaml")
	opts, err := cli.NewProjectOptions([]string{path}, cli.WithEnv(env), cli.WithWorkingDirectory(filepath.Dir(path)),
		cli.WithResolvedPaths(true))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

// The stack is complete, pinned, healthy-gated, and names only files this repository has (or
// that make build writes: build/plugin.wasm).
func TestComposeStack(t *testing.T) {
	root := repoRoot(t)
	p := loadCompose(t)
	for _, name := range []string{"keycloak", "envoy", "upstream"} {
		s, ok := p.Services[name]
		if !ok {
			t.Fatalf("no service %q", name)
		}
		if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
			t.Errorf("%s has no health check", name)
		}
		if s.NetworkMode != "host" {
			t.Errorf("%s: network_mode %q, want host (envoy.yaml reaches 127.0.0.1)", name, s.NetworkMode)
		}
		for _, v := range s.Volumes {
			rel, err := filepath.Rel(root, v.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s mounts %s, outside the repository", name, v.Source)
				continue
			}
			if rel == filepath.Join("build", "plugin.wasm") {
				continue // written by make build, which make stack runs first
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, rel, err)
			}
		}
	}
	pinned := regexp.MustCompile(`:v?\d+\.\d+\.\d+$`)
	for _, name := range []string{"keycloak", "envoy"} {
		if img := p.Services[name].Image; !pinned.MatchString(img) {
			t.Errorf("%s image %q is not pinned to an exact version", name, img)
		}
	}
	if !strings.Contains(p.Services["keycloak"].Image, "keycloak:26.") {
		t.Errorf("keycloak image %q, want a 26.x release (>= 26.2)", p.Services["keycloak"].Image)
	}
	up := p.Services["upstream"]
	if up.Build == nil {
		t.Fatal("the upstream is not built from the repository")
	}
	if _, err := os.Stat(filepath.Join(up.Build.Context, up.Build.Dockerfile)); err != nil {
		t.Errorf("the upstream's Dockerfile: %v", err)
	}
	for _, dep := range []string{"keycloak", "upstream"} {
		if d, ok := p.Services["envoy"].DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
			t.Errorf("envoy does not wait for %s to be healthy", dep)
		}
	}
	// The stack must answer where make run and make test-stack look: Keycloak on the port of
	// envoy.yaml's idp cluster, with the issuer the demo realm's tokens carry.
	kc := strings.Join(p.Services["keycloak"].Command, " ")
	for _, want := range []string{"--import-realm", "--http-port=18180", "--hostname=http://127.0.0.1:18180"} {
		if !strings.Contains(kc, want) {
			t.Errorf("keycloak command %q lacks %s", kc, want)
		}
	}
	envoy, err := os.ReadFile(filepath.Join(root, "envoy-config", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"port_value: 18180", "port_value: 18080", "port_value: 10000", "port_value: 9901"} {
		if !bytes.Contains(envoy, []byte(port)) {
			t.Errorf("envoy.yaml lacks %s, which the stack and make test-stack use", port)
		}
	}
	// The secret Envoy is given is the demo realm's secret of the filter's client.
	var realm struct {
		Clients []struct{ ClientID, Secret string }
	}
	b, err := os.ReadFile(filepath.Join(root, "envoy-config", "keycloak", "realm-demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &realm); err != nil {
		t.Fatal(err)
	}
	secret := p.Services["envoy"].Environment["TOKEN_EXCHANGE_CLIENT_SECRET"]
	found := false
	for _, c := range realm.Clients {
		found = found || (c.ClientID == "token-exchange-filter" && secret != nil && *secret == c.Secret)
	}
	if !found {
		t.Error("envoy's TOKEN_EXCHANGE_CLIENT_SECRET is not the realm's secret of token-exchange-filter")
	}
}

// ENVOY_IMAGE and KEYCLOAK_IMAGE choose the versions (the CI matrix sets them).
func TestComposeImagesOverridable(t *testing.T) {
	p := loadCompose(t, "ENVOY_IMAGE=docker.io/envoyproxy/envoy:v1.33.2", "KEYCLOAK_IMAGE=quay.io/keycloak/keycloak:26.4.0")
	if got := p.Services["envoy"].Image; got != "docker.io/envoyproxy/envoy:v1.33.2" {
		t.Errorf("envoy image %q", got)
	}
	if got := p.Services["keycloak"].Image; got != "quay.io/keycloak/keycloak:26.4.0" {
		t.Errorf("keycloak image %q", got)
	}
}

// The workflow passes actionlint, pins every action by a full commit SHA, runs make test on
// every push, the stack for the version matrix, and make push on tags.
func TestWorkflow(t *testing.T) {
	path := filepath.Join(repoRoot(t), ".github", "workflows", "ci.yml")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs, err := l.Lint(path, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Errorf("actionlint: %s:%d:%d: %s [%s]", filepath.Base(path), e.Line, e.Column, e.Message, e.Kind)
	}
	uses := regexp.MustCompile(`(?m)^\s*-?\s*uses:\s*(\S+)`)
	for _, m := range uses.FindAllStringSubmatch(string(src), -1) {
		if !regexp.MustCompile(`@[0-9a-f]{40}$`).MatchString(m[1]) {
			t.Errorf("action %s is not pinned by a full commit SHA", m[1])
		}
	}
	for _, want := range []string{"run: make test\n", "run: make stack\n", "run: make test-stack\n", "make push IMG=", "v1.33", "26.2"} {
		if !strings.Contains(string(src), want) {
			t.Errorf("the workflow lacks %q", want)
		}
	}
}

// repoRoot is the repository's top directory (tests run in envoy-config/configtest).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}
