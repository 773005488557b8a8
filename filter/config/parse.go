package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// Limits that are not in the configuration table. They exist so that a typo (or a pasted
// token instead of a name) is caught at start-up instead of producing odd requests later.
const (
	// MaxConfigBytes bounds the document: the real configuration is well under 1 KiB, and
	// the JSON validator recurses per nesting level.
	MaxConfigBytes = 64 << 10
	// MaxExpirySkewSeconds: a skew of more than a day would make every token look expired.
	MaxExpirySkewSeconds = 86400
	// MaxHeaderNameBytes applies to outputHeader and tokenExchange.userTokenHeader.
	MaxHeaderNameBytes = 128
	// MaxIdentifierBytes applies to clientId and tokenExchange.audience.
	MaxIdentifierBytes = 256
	// MaxIssuerBytes applies to tokenExchange.expectedIssuer.
	MaxIssuerBytes = 512
	// MaxScopeBytes applies to tokenExchange.scope.
	MaxScopeBytes = 1024
	// MaxURLBytes applies to tokenEndpoint.
	MaxURLBytes = 2048
	// MaxClusterBytes applies to cluster.
	MaxClusterBytes = 512
	// MaxEnvNameBytes applies to clientSecretEnv.
	MaxEnvNameBytes = 256
)

// Field names as they appear in the JSON document.
const (
	fTokenEndpoint            = "tokenEndpoint"
	fCluster                  = "cluster"
	fClientID                 = "clientId"
	fClientSecret             = "clientSecret"
	fClientSecretEnv          = "clientSecretEnv"
	fClientAuth               = "clientAuth"
	fTimeoutMs                = "timeoutMs"
	fExpirySkewSeconds        = "expirySkewSeconds"
	fFallbackToServiceAccount = "fallbackToServiceAccount"
	fOutputHeader             = "outputHeader"
	fCacheSlots               = "cacheSlots"
	fFailureBackoffMs         = "failureBackoffMs"
	fRefreshAheadSeconds      = "refreshAheadSeconds"
	fMinLifetimeSeconds       = "minLifetimeSeconds"
	fTokenExchange            = "tokenExchange"

	fEnabled               = "enabled"
	fAudience              = "audience"
	fScope                 = "scope"
	fUserTokenHeader       = "userTokenHeader"
	fRemoveUserTokenHeader = "removeUserTokenHeader"
	fExpectedIssuer        = "expectedIssuer"
	fAllowOpaqueTokens     = "allowOpaqueTokens"
	fNewKeyRate            = "newKeyExchangesPerSecond"
	fNewKeyBurst           = "newKeyExchangeBurst"

	exchangePrefix = fTokenExchange + "."
)

var (
	topLevelFields = []string{
		fTokenEndpoint, fCluster, fClientID, fClientSecret, fClientSecretEnv, fClientAuth,
		fTimeoutMs, fExpirySkewSeconds, fFallbackToServiceAccount, fOutputHeader, fCacheSlots,
		fFailureBackoffMs, fRefreshAheadSeconds, fMinLifetimeSeconds, fTokenExchange, fRules,
	}
	exchangeFields = []string{fEnabled, fAudience, fScope, fUserTokenHeader, fRemoveUserTokenHeader,
		fExpectedIssuer, fAllowOpaqueTokens, fNewKeyRate, fNewKeyBurst}
)

// Error prefixes the list so that the single log line says what it is about even when the
// plugin logs nothing else.
func (e Errors) Error() string {
	const prefix = "invalid plugin configuration"
	if len(e) == 0 {
		return prefix
	}
	var b strings.Builder
	b.WriteString(prefix)
	b.WriteString(": ")
	for i, fe := range e {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Namespace identifies the (token endpoint, client) pair in shared-data keys, so that two
// plugin configurations in one VM never read each other's tokens while configurations that
// would obtain the very same tokens may share them. The endpoint is normalised (lower-case
// scheme and host, explicit port) so that spelling differences do not split the cache.
// The client secret is deliberately not part of it: even a truncated hash of the secret
// would end up in logs and keys.
func (c *Config) Namespace() string {
	ep := c.TokenEndpoint
	host := ep.Host
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	url := ep.Scheme + "://" + host + ":" + strconv.Itoa(int(ep.Port)) + ep.Path
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(url)))
	h.Write(n[:])
	h.Write([]byte(url))
	binary.BigEndian.PutUint64(n[:], uint64(len(c.ClientID)))
	h.Write(n[:])
	h.Write([]byte(c.ClientID))
	sum := h.Sum(nil)
	return "txf2:" + hex.EncodeToString(sum[:4])
}

// problem is a FieldError with the ordinal of the top-level key it belongs to, so that
// problems found after the walk (missing fields, secret resolution) still come out in
// document order.
type problem struct {
	ord int
	FieldError
}

type parser struct {
	probs []problem
	ord   int // ordinal of the top-level key being looked at
}

func (p *parser) add(field, text string) {
	p.probs = append(p.probs, problem{ord: p.ord, FieldError: FieldError{Field: field, Problem: text}})
}

func (p *parser) addAt(ord int, field, text string) {
	p.probs = append(p.probs, problem{ord: ord, FieldError: FieldError{Field: field, Problem: text}})
}

// Parse validates the plugin configuration. getenv looks up environment variables of the
// Wasm VM (os.LookupEnv in the plugin); nil means none is set.
//
// It returns either a complete Config and a nil error, or nil and an Errors value naming
// every problem found. No error text contains the client secret or the value of the
// variable named by clientSecretEnv.
func Parse(data []byte, getenv func(name string) (string, bool)) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, Errors{{Problem: "configuration is too large (" + strconv.Itoa(len(data)) +
			" bytes, at most " + strconv.Itoa(MaxConfigBytes) + ")"}}
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, Errors{{Problem: "configuration is not valid JSON: it is empty " +
			"(expected a JSON object with at least tokenEndpoint, clientId and clientSecret)"}}
	}
	if !gjson.ValidBytes(data) {
		return nil, Errors{{Problem: "configuration is not valid JSON"}}
	}
	doc := gjson.ParseBytes(data)
	if !doc.IsObject() {
		return nil, Errors{{Problem: "configuration must be a JSON object, got " + jsonType(doc)}}
	}

	c := &Config{
		ClientAuth:               ClientAuthPost,
		TimeoutMs:                DefaultTimeoutMs,
		ExpirySkewSeconds:        DefaultExpirySkewSeconds,
		FallbackToServiceAccount: true,
		OutputHeader:             DefaultOutputHeader,
		CacheSlots:               DefaultCacheSlots,
		FailureBackoffMs:         DefaultFailureBackoffMs,
		RefreshAheadSeconds:      DefaultRefreshAheadSeconds,
		TokenExchange: Exchange{
			UserTokenHeader:       DefaultUserTokenHeader,
			RemoveUserTokenHeader: true,
			NewKeyRate:            DefaultNewKeyRate,
			NewKeyBurst:           DefaultNewKeyBurst,
		},
	}
	var (
		p          parser
		seen       = map[string]bool{}
		endpointOK bool
		// Presence (key given at all) and validity are tracked apart so that a field with a
		// bad value is not reported as missing as well.
		haveEndpoint, haveClientID bool
		haveSecret, haveSecretEnv  bool
		secretEnvOK                bool
		secretEnvOrd               int
		audienceSet                bool
		rulesSet                   []ruleSet
	)

	doc.ForEach(func(key, v gjson.Result) bool {
		name := key.Str
		path := fieldPath("", name)
		if seen[name] {
			p.add(path, "duplicate field")
			p.ord++
			return true
		}
		seen[name] = true
		switch name {
		case fTokenEndpoint:
			haveEndpoint = true
			if s, ok := p.str(path, v); ok {
				if ep, msg := parseEndpoint(s); msg != "" {
					p.add(path, msg)
				} else {
					c.TokenEndpoint = ep
					endpointOK = true
				}
			}
		case fCluster:
			if s, ok := p.str(path, v); ok && p.text(path, s, MaxClusterBytes, false) {
				c.Cluster = s
			}
		case fClientID:
			haveClientID = true
			if s, ok := p.str(path, v); ok && p.text(path, s, MaxIdentifierBytes, false) {
				c.ClientID = s
			}
		case fClientSecret:
			haveSecret = true
			// Only type and emptiness are checked: the secret is sent URL-encoded or
			// base64-encoded, so any bytes are fine, and its value must never be echoed.
			if s, ok := p.str(path, v); ok {
				if s == "" {
					p.add(path, "must not be empty")
				} else {
					c.ClientSecret = s
				}
			}
		case fClientSecretEnv:
			haveSecretEnv = true
			secretEnvOrd = p.ord
			if s, ok := p.str(path, v); ok {
				if msg := checkEnvName(s); msg != "" {
					p.add(path, msg)
				} else {
					c.ClientSecretEnv = s
					secretEnvOK = true
				}
			}
		case fClientAuth:
			if s, ok := p.str(path, v); ok {
				switch s {
				case "post":
					c.ClientAuth = ClientAuthPost
				case "basic":
					c.ClientAuth = ClientAuthBasic
				default:
					p.add(path, `must be "post" or "basic", got `+quote(s))
				}
			}
		case fTimeoutMs:
			if n, ok := p.integer(path, v, 1, MaxTimeoutMs); ok {
				c.TimeoutMs = uint32(n)
			}
		case fExpirySkewSeconds:
			if n, ok := p.integer(path, v, 0, MaxExpirySkewSeconds); ok {
				c.ExpirySkewSeconds = n
			}
		case fFallbackToServiceAccount:
			if b, ok := p.boolean(path, v); ok {
				c.FallbackToServiceAccount = b
			}
		case fOutputHeader:
			if h, ok := p.header(path, v, true); ok {
				c.OutputHeader = h
			}
		case fCacheSlots:
			if n, ok := p.integer(path, v, MinCacheSlots, MaxCacheSlots); ok {
				c.CacheSlots = uint32(n)
			}
		case fFailureBackoffMs:
			if n, ok := p.integer(path, v, 0, MaxFailureBackoffMs); ok {
				c.FailureBackoffMs = n
			}
		case fRefreshAheadSeconds:
			if n, ok := p.integer(path, v, 0, MaxRefreshAheadSeconds); ok {
				c.RefreshAheadSeconds = n
			}
		case fMinLifetimeSeconds:
			if n, ok := p.integer(path, v, 0, MaxMinLifetimeSeconds); ok {
				c.MinLifetimeSeconds = n
			}
		case fTokenExchange:
			audienceSet = p.exchange(v, &c.TokenExchange)
		case fRules:
			c.Rules, rulesSet = p.rules(v)
		default:
			p.add(path, unknownField(name, topLevelFields, exchangeFields, exchangePrefix))
		}
		p.ord++
		return true
	})

	// Problems that concern the document as a whole come after every per-field problem.
	end := p.ord
	if !haveEndpoint {
		p.addAt(end, fTokenEndpoint, "required")
	}
	if !haveClientID {
		p.addAt(end, fClientID, "required")
	}
	switch {
	case haveSecret && haveSecretEnv:
		p.addAt(secretEnvOrd, fClientSecretEnv, "set either clientSecret or clientSecretEnv, not both")
	case !haveSecret && !haveSecretEnv:
		p.addAt(end, fClientSecret, "required (or set clientSecretEnv)")
	case haveSecretEnv && secretEnvOK:
		var val string
		var ok bool
		if getenv != nil {
			val, ok = getenv(c.ClientSecretEnv)
		}
		if !ok || val == "" {
			// The name is configuration and may be printed; the value never.
			p.addAt(secretEnvOrd, fClientSecretEnv, "environment variable "+quote(c.ClientSecretEnv)+
				" of the Wasm VM is not set or empty")
		} else {
			c.ClientSecret = val
		}
	}

	if len(p.probs) > 0 {
		slices.SortStableFunc(p.probs, func(a, b problem) int { return a.ord - b.ord })
		errs := make(Errors, len(p.probs))
		for i, pr := range p.probs {
			errs[i] = pr.FieldError
		}
		return nil, errs
	}

	if !endpointOK { // unreachable: a missing or bad endpoint is always a problem
		return nil, Errors{{Field: fTokenEndpoint, Problem: "required"}}
	}
	if c.Cluster == "" {
		// Istio names the outbound cluster of a ServiceEntry or Service this way; for any
		// other mesh the operator sets cluster explicitly.
		c.Cluster = "outbound|" + strconv.Itoa(int(c.TokenEndpoint.Port)) + "||" + c.TokenEndpoint.Host
	}
	// No audience configured: none is requested, and Keycloak issues every audience mapped to
	// the client. (Requesting the filter's own clientId, as earlier versions did, fails on every
	// realm where no mapper puts the client in its own tokens: Keycloak only narrows audiences,
	// 400 "Requested audience not available".)
	_ = audienceSet
	c.inheritRules(rulesSet)
	return c, nil
}

// exchange parses the tokenExchange block into x and reports whether an audience was given.
func (p *parser) exchange(v gjson.Result, x *Exchange) (audienceSet bool) {
	if v.Type == gjson.Null {
		return false
	}
	if !v.IsObject() {
		p.add(fTokenExchange, "must be an object, got "+jsonType(v))
		return false
	}
	seen := map[string]bool{}
	v.ForEach(func(key, v gjson.Result) bool {
		name := key.Str
		path := fieldPath(exchangePrefix, name)
		if seen[name] {
			p.add(path, "duplicate field")
			return true
		}
		seen[name] = true
		switch name {
		case fEnabled:
			if b, ok := p.boolean(path, v); ok {
				x.Enabled = b
			}
		case fAudience:
			if s, ok := p.str(path, v); ok && p.text(path, s, MaxIdentifierBytes, false) {
				x.Audience = s
				audienceSet = true
			}
		case fScope:
			if s, ok := p.str(path, v); ok && p.text(path, s, MaxScopeBytes, true) {
				x.Scope = s
			}
		case fUserTokenHeader:
			if h, ok := p.header(path, v, false); ok {
				x.UserTokenHeader = h
			}
		case fRemoveUserTokenHeader:
			if b, ok := p.boolean(path, v); ok {
				x.RemoveUserTokenHeader = b
			}
		case fExpectedIssuer:
			if s, ok := p.str(path, v); ok && p.text(path, s, MaxIssuerBytes, false) {
				if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") {
					p.add(path, "must be the issuer URL the user tokens carry in iss (e.g. https://keycloak.example.com/realms/demo), got "+strconv.Quote(s))
				} else {
					x.ExpectedIssuer = s
				}
			}
		case fAllowOpaqueTokens:
			if b, ok := p.boolean(path, v); ok {
				x.AllowOpaqueTokens = b
			}
		case fNewKeyRate:
			if n, ok := p.integer(path, v, 0, MaxNewKeyRate); ok {
				x.NewKeyRate = uint32(n)
			}
		case fNewKeyBurst:
			if n, ok := p.integer(path, v, 1, MaxNewKeyRate); ok {
				x.NewKeyBurst = uint32(n)
			}
		default:
			p.add(path, unknownField(name, exchangeFields, topLevelFields, ""))
		}
		return true
	})
	return audienceSet
}

func (p *parser) str(path string, v gjson.Result) (string, bool) {
	if v.Type != gjson.String {
		p.add(path, "must be a string, got "+jsonType(v))
		return "", false
	}
	return v.Str, true
}

func (p *parser) boolean(path string, v gjson.Result) (bool, bool) {
	switch v.Type {
	case gjson.True:
		return true, true
	case gjson.False:
		return false, true
	}
	p.add(path, "must be a boolean, got "+jsonType(v))
	return false, false
}

// integer accepts only a plain JSON integer literal: 1.5, 1e3 and "5000" are rejected so
// that a unit mistake (seconds vs milliseconds written as a fraction) is not silently
// rounded.
func (p *parser) integer(path string, v gjson.Result, lo, hi int64) (int64, bool) {
	if v.Type != gjson.Number {
		p.add(path, "must be an integer, got "+jsonType(v))
		return 0, false
	}
	n, err := strconv.ParseInt(v.Raw, 10, 64)
	if err != nil || n < lo || n > hi {
		p.add(path, "must be an integer between "+strconv.FormatInt(lo, 10)+" and "+
			strconv.FormatInt(hi, 10)+", got "+truncate(v.Raw, 32))
		return 0, false
	}
	return n, true
}

// text checks an identifier-like value that is sent to the IdP. The value is not echoed:
// a control character in it would break the one-line log, and scope or audience values
// may be long.
func (p *parser) text(path, s string, max int, emptyOK bool) bool {
	switch {
	case s == "" && !emptyOK:
		p.add(path, "must not be empty")
	case len(s) > max:
		p.add(path, "must be at most "+strconv.Itoa(max)+" bytes, got "+strconv.Itoa(len(s)))
	case !printableASCII(s):
		p.add(path, "must contain only printable ASCII characters (no control characters)")
	default:
		return true
	}
	return false
}

// Headers the filter must never write: Envoy derives them itself, and overwriting them
// with a bearer token would corrupt the request.
var reservedOutputHeaders = []string{"host", "content-length", "transfer-encoding", "te", "connection"}

func (p *parser) header(path string, v gjson.Result, output bool) (string, bool) {
	s, ok := p.str(path, v)
	if !ok {
		return "", false
	}
	switch {
	case s == "":
		p.add(path, "must not be empty")
	case len(s) > MaxHeaderNameBytes:
		p.add(path, "must be at most "+strconv.Itoa(MaxHeaderNameBytes)+" bytes, got "+strconv.Itoa(len(s)))
	case s[0] == ':':
		p.add(path, "must not be a pseudo-header, got "+quote(s))
	case !isToken(s):
		p.add(path, "must be a valid HTTP header name (RFC 7230 token characters), got "+quote(s))
	default:
		h := strings.ToLower(s)
		if output && slices.Contains(reservedOutputHeaders, h) {
			p.add(path, "must not be "+quote(h)+" (a header Envoy manages itself)")
			return "", false
		}
		return h, true
	}
	return "", false
}

func checkEnvName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > MaxEnvNameBytes:
		return "must be at most " + strconv.Itoa(MaxEnvNameBytes) + " bytes, got " + strconv.Itoa(len(s))
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b <= ' ' || b >= 0x7f || b == '=' {
			return `must be an environment variable name (printable ASCII, no spaces or "="), got ` + quote(s)
		}
	}
	return ""
}

// unknownField suggests the intended name for the two likely slips: wrong case, and a
// tokenExchange field written at the top level (or the other way round).
func unknownField(name string, here, other []string, otherPrefix string) string {
	for _, f := range here {
		if strings.EqualFold(f, name) {
			return "unknown field (did you mean " + quote(f) + "?)"
		}
	}
	for _, f := range other {
		if strings.EqualFold(f, name) {
			return "unknown field (did you mean " + quote(otherPrefix+f) + "?)"
		}
	}
	return "unknown field"
}

// fieldPath quotes names that are not plain identifiers, so that the path stays readable
// and the log line stays one line whatever the key contains.
func fieldPath(prefix, name string) string {
	plain := name != ""
	for i := 0; i < len(name) && plain; i++ {
		b := name[i]
		plain = b == '_' || b == '-' || '0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
	}
	if plain {
		return prefix + name
	}
	return prefix + quote(name)
}

func jsonType(v gjson.Result) string {
	switch v.Type {
	case gjson.Null:
		return "null"
	case gjson.False, gjson.True:
		return "boolean"
	case gjson.Number:
		return "number"
	case gjson.String:
		return "string"
	}
	if v.IsArray() {
		return "array"
	}
	return "object"
}

// quote echoes a configured value safely on one log line, cut short if long.
func quote(s string) string {
	const max = 128
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

func truncate(s string, max int) string {
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 7230 token (tchar+).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}
