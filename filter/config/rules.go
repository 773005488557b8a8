package config

import (
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// Rule is one entry of the optional "rules" list: requests whose path and host match it use
// its exchange settings. Fields a rule leaves out are those of tokenExchange. With rules
// present, a request that matches none passes through untouched: no token added, no header
// removed, no callout — other APIs behind the same gateway see no change.
type Rule struct {
	PathPrefix string   // "" = any path
	Hosts      []string // lower-case, without port; "*.example.com" matches sub-domains; empty = any host
	Enabled    bool
	Audience   string
	Scope      string
}

// MaxRules bounds the list: rules are tried in order for every request.
const MaxRules = 64

const (
	fRules      = "rules"
	fPathPrefix = "pathPrefix"
	fHosts      = "hosts"
)

var ruleFields = []string{fPathPrefix, fHosts, fAudience, fScope, fEnabled}

// ruleSet says which optional fields a rule set, so that the others are inherited.
type ruleSet struct{ enabled, audience, scope bool }

func (p *parser) rules(v gjson.Result) (rules []Rule, set []ruleSet) {
	if v.Type == gjson.Null {
		return nil, nil
	}
	if !v.IsArray() {
		p.add(fRules, "must be an array, got "+jsonType(v))
		return nil, nil
	}
	items := v.Array()
	if len(items) > MaxRules {
		p.add(fRules, "must have at most "+strconv.Itoa(MaxRules)+" rules, got "+strconv.Itoa(len(items)))
		return nil, nil
	}
	for i, item := range items {
		prefix := fRules + "[" + strconv.Itoa(i) + "]"
		if !item.IsObject() {
			p.add(prefix, "must be an object, got "+jsonType(item))
			continue
		}
		var r Rule
		var s ruleSet
		seen := map[string]bool{}
		item.ForEach(func(key, v gjson.Result) bool {
			name := key.Str
			path := prefix + "." + name
			if seen[name] {
				p.add(path, "duplicate field")
				return true
			}
			seen[name] = true
			switch name {
			case fPathPrefix:
				if str, ok := p.str(path, v); ok {
					if !strings.HasPrefix(str, "/") {
						p.add(path, `must start with "/", got `+quote(str))
					} else if p.text(path, str, MaxURLBytes, false) {
						r.PathPrefix = str
					}
				}
			case fHosts:
				r.Hosts = p.hosts(path, v)
			case fEnabled:
				if b, ok := p.boolean(path, v); ok {
					r.Enabled, s.enabled = b, true
				}
			case fAudience:
				if str, ok := p.str(path, v); ok && p.text(path, str, MaxIdentifierBytes, false) {
					r.Audience, s.audience = str, true
				}
			case fScope:
				if str, ok := p.str(path, v); ok && p.text(path, str, MaxScopeBytes, true) {
					r.Scope, s.scope = str, true
				}
			default:
				p.add(path, "unknown field (a rule has pathPrefix, hosts, audience, scope, enabled)")
			}
			return true
		})
		rules = append(rules, r)
		set = append(set, s)
	}
	return rules, set
}

func (p *parser) hosts(path string, v gjson.Result) []string {
	if !v.IsArray() {
		p.add(path, "must be an array of host names, got "+jsonType(v))
		return nil
	}
	var out []string
	for i, h := range v.Array() {
		hp := path + "[" + strconv.Itoa(i) + "]"
		s, ok := p.str(hp, h)
		if !ok {
			continue
		}
		name := strings.ToLower(strings.TrimPrefix(s, "*."))
		if name == "" || !validHostName(name) {
			p.add(hp, `must be a host name without port, optionally starting with "*.", got `+quote(s))
			continue
		}
		out = append(out, strings.ToLower(s))
	}
	return out
}

func validHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// inheritRules fills what each rule left out from the tokenExchange block.
func (c *Config) inheritRules(set []ruleSet) {
	for i := range c.Rules {
		r, s := &c.Rules[i], set[i]
		if !s.enabled {
			r.Enabled = c.TokenExchange.Enabled
		}
		if !s.audience {
			r.Audience = c.TokenExchange.Audience
		}
		if !s.scope {
			r.Scope = c.TokenExchange.Scope
		}
	}
}

// Match returns the first rule matching a request's :authority and :path. Without rules every
// request matches the tokenExchange settings (ok is true, rule nil). The path is compared as
// Envoy hands it over, byte for byte (as Envoy's own route "prefix" does): enable
// normalize_path and merge_slashes in the HTTP connection manager so that "//api" or "/%61pi"
// cannot slip past a rule.
func (c *Config) Match(authority, path string) (rule *Rule, ok bool) {
	if len(c.Rules) == 0 {
		return nil, true
	}
	host := hostOf(authority)
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.PathPrefix != "" && !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		if len(r.Hosts) > 0 && !hostMatches(r.Hosts, host) {
			continue
		}
		return r, true
	}
	return nil, false
}

// hostOf lower-cases an authority and drops its port (IPv6 literals keep their brackets).
func hostOf(authority string) string {
	h := authority
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func hostMatches(hosts []string, host string) bool {
	for _, h := range hosts {
		if suffix, wild := strings.CutPrefix(h, "*."); wild {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if h == host {
			return true
		}
	}
	return false
}
