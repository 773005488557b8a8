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
	// MinLifetimeSeconds is the configuration's minLifetimeSeconds unless the rule sets its own.
	MinLifetimeSeconds int64
}

// MaxRules bounds the list: rules are tried in order for every request.
const MaxRules = 64

const (
	fRules      = "rules"
	fPathPrefix = "pathPrefix"
	fHosts      = "hosts"
)

var ruleFields = []string{fPathPrefix, fHosts, fAudience, fScope, fEnabled, fMinLifetimeSeconds}

// ruleSet says which optional fields a rule set, so that the others are inherited.
type ruleSet struct{ enabled, audience, scope, minLifetime bool }

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
			case fMinLifetimeSeconds:
				if n, ok := p.integer(path, v, 0, MaxMinLifetimeSeconds); ok {
					r.MinLifetimeSeconds, s.minLifetime = n, true
				}
			default:
				p.add(path, "unknown field (a rule has pathPrefix, hosts, audience, scope, enabled, minLifetimeSeconds)")
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
		if !s.minLifetime {
			r.MinLifetimeSeconds = c.MinLifetimeSeconds
		}
	}
}

// RulesUseHosts reports whether any rule has a host list: otherwise Match ignores :authority,
// and the caller need not read it.
func (c *Config) RulesUseHosts() bool {
	for i := range c.Rules {
		if len(c.Rules[i].Hosts) > 0 {
			return true
		}
	}
	return false
}

// Match returns the first rule matching a request's :authority and :path. Without rules every
// request matches the tokenExchange settings (ok is true, rule nil). A path matches a prefix as
// Envoy hands it over or in its normal form (normalizePath), an authority by its host
// (normalizeHost); see the comment above normalizePath.
func (c *Config) Match(authority, path string) (rule *Rule, ok bool) {
	if len(c.Rules) == 0 {
		return nil, true
	}
	// Both normalizations are made only when a rule needs them: a hit on a path rule whose
	// prefix the raw path already has costs neither (they were a twentieth of a memo hit).
	var host, norm string
	var hostParsed, parsed, normed bool
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.PathPrefix != "" && !strings.HasPrefix(path, r.PathPrefix) {
			if !normed {
				norm, normed = normalizePath(path), true
			}
			if !strings.HasPrefix(norm, r.PathPrefix) {
				continue
			}
		}
		if len(r.Hosts) > 0 {
			if !hostParsed {
				host, parsed = normalizeHost(authority)
				hostParsed = true
			}
			if parsed && !hostMatches(r.Hosts, host) {
				continue
			}
		}
		return r, true
	}
	return nil, false
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

// The forms of one request that the router may see as the same route. Envoy normalises :path
// before routing only when the listener says so (normalize_path, merge_slashes,
// path_with_escaped_slashes_action; the shipped configurations do), and an authority may carry
// user-info, several ports or trailing dots. A rule must not be slipped past by such a form, so a
// request matches a rule if its raw path or its normalised path does, and an authority that does
// not parse as a host name matches every host list.

// normalizePath is RFC 3986 normalisation the way Envoy's path normalisation and merge_slashes
// do it: the query and fragment dropped, percent-encoded unreserved characters and encoded
// slashes and backslashes decoded, backslashes turned into slashes, repeated slashes merged,
// "." and ".." segments removed. ";" parameters are kept: a prefix match sees them anyway.
func normalizePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if alreadyNormal(p) {
		return p // the common case, every request of a pass-through route: no allocation
	}
	return normalizeSlow(p)
}

// alreadyNormal reports whether normalizeSlow would return p unchanged: it starts with "/" and
// has no "%", no backslash, no empty segment but a trailing one, and no "." or ".." segment.
func alreadyNormal(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			switch p[i] {
			case '%', '\\':
				return false
			case '/':
			default:
				continue
			}
		}
		seg := p[segStart:i]
		if seg == "." || seg == ".." || (seg == "" && i < len(p)) {
			return false
		}
		segStart = i + 1
	}
	return true
}

// normalizeSlow is normalizePath for a path without its query, done in full.
func normalizeSlow(p string) string {
	var b strings.Builder
	b.Grow(len(p) + 1)
	if !strings.HasPrefix(p, "/") {
		b.WriteByte('/')
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) {
			if d, ok := unhex(p[i+1], p[i+2]); ok && (unreserved(d) || d == '/' || d == '\\') {
				c = d
				i += 2
			}
		}
		if c == '\\' {
			c = '/'
		}
		b.WriteByte(c)
	}
	segs := strings.Split(b.String(), "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs[1:] {
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		out = append(out, s)
	}
	n := "/" + strings.Join(out, "/")
	if last := segs[len(segs)-1]; len(out) > 0 && (last == "" || last == "." || last == "..") {
		n += "/"
	}
	return n
}

func unhex(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'a' <= c && c <= 'f':
			return c - 'a' + 10, true
		case 'A' <= c && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// normalizeHost is the host of an authority: user-info dropped, every trailing ":port" dropped
// (IPv6 literals keep their brackets), trailing dots dropped, lower-cased. ok is false when what
// is left is not a host name or an IP literal.
func normalizeHost(authority string) (host string, ok bool) {
	h := authority
	if i := strings.LastIndexByte(h, '@'); i >= 0 {
		h = h[i+1:]
	}
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", false
		}
		return strings.ToLower(h[:end+1]), true
	}
	for {
		i := strings.LastIndexByte(h, ':')
		if i < 0 {
			break
		}
		h = h[:i]
	}
	h = strings.ToLower(strings.TrimRight(h, "."))
	return h, h != "" && h[0] != '.' && validHostName(h) && !strings.Contains(h, "..")
}
