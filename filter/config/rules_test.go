package config

import (
	"strings"
	"testing"
)

func TestRulesInheritAndOverride(t *testing.T) {
	c := mustParse(t, withBase(`"tokenExchange":{"enabled":true,"audience":"kagenti-api","scope":"openid"}`,
		`"rules":[{"pathPrefix":"/agents","audience":"agents-api"},{"hosts":["API.example.com","*.kagenti.dev"],"enabled":false},{"pathPrefix":"/public","scope":""}]`))
	if len(c.Rules) != 3 {
		t.Fatalf("rules = %+v", c.Rules)
	}
	want := []Rule{
		{PathPrefix: "/agents", Enabled: true, Audience: "agents-api", Scope: "openid"},
		{Hosts: []string{"api.example.com", "*.kagenti.dev"}, Enabled: false, Audience: "kagenti-api", Scope: "openid"},
		{PathPrefix: "/public", Enabled: true, Audience: "kagenti-api", Scope: ""},
	}
	for i, w := range want {
		g := c.Rules[i]
		if g.PathPrefix != w.PathPrefix || g.Enabled != w.Enabled || g.Audience != w.Audience || g.Scope != w.Scope ||
			strings.Join(g.Hosts, ",") != strings.Join(w.Hosts, ",") {
			t.Errorf("rule %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestRulesErrors(t *testing.T) {
	cases := map[string]struct{ rules, field, problem string }{
		"not an array":     {`{"pathPrefix":"/"}`, "rules", "must be an array, got object"},
		"item not object":  {`["/api"]`, "rules[0]", "must be an object, got string"},
		"relative prefix":  {`[{"pathPrefix":"api"}]`, "rules[0].pathPrefix", `must start with "/", got "api"`},
		"hosts not array":  {`[{"hosts":"a.com"}]`, "rules[0].hosts", "must be an array of host names, got string"},
		"host with port":   {`[{"hosts":["a.com:8080"]}]`, "rules[0].hosts[0]", `must be a host name without port, optionally starting with "*.", got "a.com:8080"`},
		"unknown field":    {`[{"path":"/a"}]`, "rules[0].path", "unknown field (a rule has pathPrefix, hosts, audience, scope, enabled, minLifetimeSeconds)"},
		"enabled not bool": {`[{"enabled":"yes"}]`, "rules[0].enabled", "must be a boolean, got string"},
		"duplicate field":  {`[{"pathPrefix":"/a","pathPrefix":"/b"}]`, "rules[0].pathPrefix", "duplicate field"},
		"too many":         {"[" + strings.Repeat(`{},`, MaxRules) + `{}]`, "rules", "must have at most 64 rules, got 65"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			errs := mustFail(t, withBase(`"rules":`+tc.rules), nil)
			if len(errs) != 1 || errs[0].Field != tc.field || errs[0].Problem != tc.problem {
				t.Fatalf("errors %v, want %s: %s", errs, tc.field, tc.problem)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	c := mustParse(t, withBase(`"tokenExchange":{"enabled":true}`,
		`"rules":[{"pathPrefix":"/agents","hosts":["api.example.com"]},{"hosts":["*.kagenti.dev"]},{"pathPrefix":"/v2/"}]`))
	cases := []struct {
		authority, path string
		want            int // rule index, -1 = no match
	}{
		{"api.example.com", "/agents/1", 0},
		{"API.Example.com:443", "/agents", 0},
		{"other.example.com", "/agents", -1},
		{"x.kagenti.dev", "/anything", 1},
		{"kagenti.dev", "/anything", -1}, // the wildcard needs a sub-domain
		{"a.b.kagenti.dev:8443", "/", 1},
		{"anyhost", "/v2/items", 2},
		{"anyhost", "/v1/items", -1},
		{"[::1]:8080", "/v2/x", 2},
		{"api.example.com.", "/agents", 0}, // fully qualified, trailing dot
	}
	for _, tc := range cases {
		r, ok := c.Match(tc.authority, tc.path)
		got := -1
		if ok {
			for i := range c.Rules {
				if r == &c.Rules[i] {
					got = i
				}
			}
		}
		if got != tc.want {
			t.Errorf("Match(%q, %q) = rule %d, want %d", tc.authority, tc.path, got, tc.want)
		}
	}
	noRules := mustParse(t, withBase())
	if r, ok := noRules.Match("x", "/"); !ok || r != nil {
		t.Fatalf("without rules every request uses tokenExchange")
	}
}

// Forms of a request that the router may route like the rule's own cannot slip past the rule:
// paths are matched raw and normalised, authorities are normalised, and one that does not parse
// matches every host list.
func TestMatchResistsBypassForms(t *testing.T) {
	c := &Config{Rules: []Rule{{PathPrefix: "/agents", Hosts: []string{"api.kagenti.example.com"}, Enabled: true, Audience: "agents"}}}
	const host = "api.kagenti.example.com"
	for _, path := range []string{"/agents/run", "//agents/run", "/./agents", "/x/../agents/run", "/%61gents", "/agents%2Frun",
		`\agents`, "/%5Cagents", "/agents;jsessionid=1", "/a/b/../../agents", "/agents?x=1", "///agents//run"} {
		if _, ok := c.Match(host, path); !ok {
			t.Errorf("path %q escaped the rule", path)
		}
	}
	for _, authority := range []string{"API.Kagenti.Example.Com", host + ":443", host + ":443:443", "user@" + host, "user:pw@" + host + ":8080",
		host + ".", host + "..", "api..kagenti.example.com", "bad host!", "[::1"} {
		if _, ok := c.Match(authority, "/agents"); !ok {
			t.Errorf("authority %q escaped the rule", authority)
		}
	}
	for _, tc := range [][2]string{{host, "/other"}, {"other.example.com", "/agents"}, {"[::1]:8080", "/agents"}, {host, "/%2e%2e/other"}} {
		if _, ok := c.Match(tc[0], tc[1]); ok {
			t.Errorf("%s %s matched a rule it is not for", tc[0], tc[1])
		}
	}
	if got := normalizePath("/a/./b/../../c//d/%7Euser/%2e/x?q#f"); got != "/c/d/~user/x" {
		t.Errorf("normalizePath = %q", got)
	}
}

// The fast path of normalizePath (alreadyNormal) never changes the answer: for every path it
// accepts, the full normalisation returns the path itself.
func FuzzNormalizePathFastPath(f *testing.F) {
	for _, s := range []string{"/", "/api", "/api/", "/api/v1/x", "//api", "/api//x", "/./a", "/a/.", "/a/..",
		"/a/../b", "/%2e%2e/a", "/a\\b", "api", "", "/a/.b", "/a/..b/", "/.well-known/x", "/a?x=/../", "/a#/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
		if alreadyNormal(p) && normalizeSlow(p) != p {
			t.Fatalf("alreadyNormal(%q) but the full normalisation gives %q", p, normalizeSlow(p))
		}
		if got, want := normalizePath(p), normalizeSlow(p); got != want {
			t.Fatalf("normalizePath(%q) = %q, want %q", p, got, want)
		}
	})
}

func TestNormalizePathCleanPathAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = normalizePath("/static/app.js?v=3") }); n != 0 {
		t.Errorf("%v allocations for a clean path", n)
	}
}
