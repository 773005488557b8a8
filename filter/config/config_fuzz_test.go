package config

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// Two secrets of equal length: the parser must not be able to tell them apart in any error
// text (the document size, which is reported, stays the same).
const (
	fuzzSecretA = "FUZZ-SECRET-AAAA-7c1e"
	fuzzSecretB = "FUZZ-SECRET-BBBB-d93a"
)

var namespaceRE = regexp.MustCompile(`^txf2:[0-9a-f]{8}$`)

func FuzzParse(f *testing.F) {
	seeds := []string{
		string(withBase()),
		string(withBase(`"clientAuth":"basic"`, `"timeoutMs":250`, `"expirySkewSeconds":0`, `"fallbackToServiceAccount":false`,
			`"outputHeader":"X-Token"`, `"cacheSlots":16`, `"cluster":"kc"`,
			`"tokenExchange":{"enabled":true,"audience":"api","scope":"openid","userTokenHeader":"Authorization","removeUserTokenHeader":false}`)),
		string(obj(`"tokenEndpoint":"http://[::1]:8080?x=1"`, fieldClientID, `"clientSecretEnv":"`+testEnvName+`"`)),
		string(obj(`"tokenEndpoint":"https://u:p@kc/t"`, fieldClientID, fieldSecret)),
		`{"clientSecret":"s","clientSecret":"t","tokenExchange":{"enabled":true,"enabled":1}}`,
		`{"tokenExchange":null,"timeoutMs":1e3,"cacheSlots":-0}`,
		`{"client\u0053ecret":"x\u0000y"}`,
		`[{"a":{"b":[1,2,{"c":null}]}}]`,
		`{`,
		``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	for _, tt := range errorCases {
		f.Add(tt.data)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		envA := func(string) (string, bool) { return fuzzSecretA, true }
		envB := func(string) (string, bool) { return fuzzSecretB, true }

		c, err := Parse(data, envA)
		checkResult(t, data, c, err)
		if c != nil && c.ClientSecretEnv != "" && c.ClientSecret != fuzzSecretA {
			t.Fatalf("secret not taken from the environment variable")
		}

		// The variable's value must not influence any error text.
		cB, errB := Parse(data, envB)
		checkResult(t, data, cB, errB)
		if msgA, msgB := errText(err), errText(errB); msgA != msgB {
			t.Fatalf("error text depends on the environment variable's value:\n%q\n%q", msgA, msgB)
		}
		if strings.Contains(errText(err), fuzzSecretA) {
			t.Fatalf("error text contains the environment variable's value: %q", errText(err))
		}
		for _, getenv := range []func(string) (string, bool){nil, testGetenv} {
			c, err := Parse(data, getenv)
			checkResult(t, data, c, err)
		}

		// Nor may the clientSecret field's value: swap it for two secrets of equal length.
		if docA, docB, ok := replaceSecret(data); ok {
			cA, errA := Parse(docA, nil)
			cB, errB := Parse(docB, nil)
			checkResult(t, docA, cA, errA)
			checkResult(t, docB, cB, errB)
			if msgA, msgB := errText(errA), errText(errB); msgA != msgB {
				t.Fatalf("error text depends on the client secret:\n%q\n%q", msgA, msgB)
			}
			if strings.Contains(errText(errA), fuzzSecretA) {
				t.Fatalf("error text contains the client secret: %q", errText(errA))
			}
			if cA != nil && cA.ClientSecret != fuzzSecretA {
				t.Fatalf("client secret not taken from the document")
			}
		}
	})
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// replaceSecret rewrites the value of the first clientSecret field (the one the parser
// uses) when it is a non-empty string; emptiness is the only property the parser checks.
func replaceSecret(data []byte) (a, b []byte, ok bool) {
	if len(data) > MaxConfigBytes || !gjson.ValidBytes(data) {
		return nil, nil, false
	}
	doc := gjson.ParseBytes(data)
	if !doc.IsObject() {
		return nil, nil, false
	}
	var start, end int
	doc.ForEach(func(key, v gjson.Result) bool {
		if key.Str != fClientSecret {
			return true
		}
		if v.Type == gjson.String && v.Str != "" && string(data[v.Index:v.Index+len(v.Raw)]) == v.Raw {
			start, end, ok = v.Index, v.Index+len(v.Raw), true
		}
		return false
	})
	if !ok {
		return nil, nil, false
	}
	build := func(secret string) []byte {
		out := append([]byte{}, data[:start]...)
		out = append(out, '"')
		out = append(out, secret...)
		out = append(out, '"')
		return append(out, data[end:]...)
	}
	return build(fuzzSecretA), build(fuzzSecretB), true
}

// checkResult asserts the contract of Parse: exactly one of Config and a non-empty Errors,
// a Config that keeps every invariant the plugin relies on, and a one-line error text.
func checkResult(t *testing.T, data []byte, c *Config, err error) {
	t.Helper()
	if c == nil && err == nil {
		t.Fatalf("Parse(%q): neither Config nor error", data)
	}
	if c != nil && err != nil {
		t.Fatalf("Parse(%q): both Config and error %v", data, err)
	}
	if err != nil {
		var errs Errors
		if !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("Parse(%q): error %T %v is not a non-empty Errors", data, err, err)
		}
		for _, fe := range errs {
			if fe.Problem == "" {
				t.Fatalf("Parse(%q): empty problem text for field %q", data, fe.Field)
			}
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "invalid plugin configuration: ") {
			t.Fatalf("error text lacks the prefix: %q", msg)
		}
		for i := 0; i < len(msg); i++ {
			if msg[i] < 0x20 || msg[i] == 0x7f {
				t.Fatalf("error text contains control character %#x: %q", msg[i], msg)
			}
		}
		return
	}

	ep := c.TokenEndpoint
	switch {
	case c.TimeoutMs < 1 || c.TimeoutMs > MaxTimeoutMs:
		t.Fatalf("TimeoutMs %d out of range", c.TimeoutMs)
	case c.ExpirySkewSeconds < 0 || c.ExpirySkewSeconds > MaxExpirySkewSeconds:
		t.Fatalf("ExpirySkewSeconds %d out of range", c.ExpirySkewSeconds)
	case c.CacheSlots < MinCacheSlots || c.CacheSlots > MaxCacheSlots:
		t.Fatalf("CacheSlots %d out of range", c.CacheSlots)
	case c.ClientAuth != ClientAuthPost && c.ClientAuth != ClientAuthBasic:
		t.Fatalf("ClientAuth %d unknown", c.ClientAuth)
	case ep.Scheme != "http" && ep.Scheme != "https":
		t.Fatalf("scheme %q", ep.Scheme)
	case ep.Host == "" || ep.Authority == "" || ep.Port == 0:
		t.Fatalf("endpoint without host or port: %+v", ep)
	case ep.Host != strings.ToLower(ep.Host):
		t.Fatalf("host %q not lower-case", ep.Host)
	case !strings.HasPrefix(ep.Path, "/"):
		t.Fatalf("path %q does not start with /", ep.Path)
	case !printableASCII(ep.Authority) || !printableASCII(ep.Path) || strings.ContainsAny(ep.Authority+ep.Path, " #@"):
		t.Fatalf("endpoint with unsafe characters: %+v", ep)
	case c.Cluster == "":
		t.Fatalf("empty cluster")
	case c.ClientID == "" || !printableASCII(c.ClientID):
		t.Fatalf("bad ClientID %q", c.ClientID)
	case c.ClientSecret == "":
		t.Fatalf("empty ClientSecret")
	case !printableASCII(c.TokenExchange.Audience):
		t.Fatalf("bad Audience %q", c.TokenExchange.Audience)
	case !printableASCII(c.TokenExchange.Scope):
		t.Fatalf("bad Scope %q", c.TokenExchange.Scope)
	case !namespaceRE.MatchString(c.Namespace()):
		t.Fatalf("bad Namespace %q", c.Namespace())
	}
	for _, h := range []string{c.OutputHeader, c.TokenExchange.UserTokenHeader} {
		if h == "" || h != strings.ToLower(h) || !isToken(h) || len(h) > MaxHeaderNameBytes {
			t.Fatalf("bad header name %q", h)
		}
	}
}
