package config

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// Distinctive values so that a leak into an error text cannot be a coincidence.
const (
	testSecret    = "Sup3r-S3cret-Value-9f2c"
	testEnvSecret = "Env-S3cret-Value-41ad"
	testEnvName   = "TXF_CLIENT_SECRET"
	testURL       = "https://kc.example.com/realms/demo/protocol/openid-connect/token"
)

const (
	fieldEndpoint = `"tokenEndpoint":"` + testURL + `"`
	fieldClientID = `"clientId":"txf"`
	fieldSecret   = `"clientSecret":"` + testSecret + `"`
)

func obj(fields ...string) []byte {
	return []byte("{" + strings.Join(fields, ",") + "}")
}

// withBase is a valid configuration plus extra fields.
func withBase(extra ...string) []byte {
	return obj(append([]string{fieldEndpoint, fieldClientID, fieldSecret}, extra...)...)
}

// testGetenv knows only testEnvName (set), EMPTY_VAR (set, empty).
func testGetenv(name string) (string, bool) {
	switch name {
	case testEnvName:
		return testEnvSecret, true
	case "EMPTY_VAR":
		return "", true
	}
	return "", false
}

func mustParse(t *testing.T, data []byte) *Config {
	t.Helper()
	c, err := Parse(data, testGetenv)
	if err != nil {
		t.Fatalf("Parse(%s): unexpected error: %v", data, err)
	}
	if c == nil {
		t.Fatalf("Parse(%s): nil Config and nil error", data)
	}
	return c
}

func mustFail(t *testing.T, data []byte, getenv func(string) (string, bool)) Errors {
	t.Helper()
	c, err := Parse(data, getenv)
	if err == nil {
		t.Fatalf("Parse(%s): expected an error, got %+v", data, c)
	}
	if c != nil {
		t.Fatalf("Parse(%s): got both a Config and an error", data)
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse(%s): error is %T, want Errors", data, err)
	}
	if len(errs) == 0 {
		t.Fatalf("Parse(%s): empty Errors", data)
	}
	return errs
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, withBase())
	want := &Config{
		TokenEndpoint: Endpoint{
			URL:       testURL,
			Scheme:    "https",
			Authority: "kc.example.com",
			Host:      "kc.example.com",
			Port:      443,
			Path:      "/realms/demo/protocol/openid-connect/token",
		},
		Cluster:                  "outbound|443||kc.example.com",
		ClientID:                 "txf",
		ClientSecret:             testSecret,
		ClientAuth:               ClientAuthPost,
		TimeoutMs:                DefaultTimeoutMs,
		ExpirySkewSeconds:        DefaultExpirySkewSeconds,
		FallbackToServiceAccount: true,
		OutputHeader:             DefaultOutputHeader,
		CacheSlots:               DefaultCacheSlots,
		FailureBackoffMs:         DefaultFailureBackoffMs,
		RefreshAheadSeconds:      DefaultRefreshAheadSeconds,
		TokenExchange: Exchange{
			Enabled:               false,
			Audience:              "", // none requested: every audience mapped to the client
			Scope:                 "",
			UserTokenHeader:       DefaultUserTokenHeader,
			RemoveUserTokenHeader: true,
			ExpectedIssuer:        "",    // not checked
			AllowOpaqueTokens:     false, // JWTs only
			NewKeyRate:            DefaultNewKeyRate,
			NewKeyBurst:           DefaultNewKeyBurst,
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestValidValues(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
		check func(*Config) bool
	}{
		{"cluster", []string{`"cluster":"outbound|8443||keycloak.ns.svc.cluster.local"`},
			func(c *Config) bool { return c.Cluster == "outbound|8443||keycloak.ns.svc.cluster.local" }},
		{"clientAuth post", []string{`"clientAuth":"post"`}, func(c *Config) bool { return c.ClientAuth == ClientAuthPost }},
		{"clientAuth basic", []string{`"clientAuth":"basic"`}, func(c *Config) bool { return c.ClientAuth == ClientAuthBasic }},
		{"timeoutMs min", []string{`"timeoutMs":1`}, func(c *Config) bool { return c.TimeoutMs == 1 }},
		{"timeoutMs max", []string{`"timeoutMs":60000`}, func(c *Config) bool { return c.TimeoutMs == 60000 }},
		{"expirySkewSeconds 0", []string{`"expirySkewSeconds":0`}, func(c *Config) bool { return c.ExpirySkewSeconds == 0 }},
		{"expirySkewSeconds max", []string{`"expirySkewSeconds":86400`}, func(c *Config) bool { return c.ExpirySkewSeconds == 86400 }},
		{"fallback false", []string{`"fallbackToServiceAccount":false`}, func(c *Config) bool { return !c.FallbackToServiceAccount }},
		{"fallback true", []string{`"fallbackToServiceAccount":true`}, func(c *Config) bool { return c.FallbackToServiceAccount }},
		{"outputHeader lower-cased", []string{`"outputHeader":"X-Exchanged-Token"`}, func(c *Config) bool { return c.OutputHeader == "x-exchanged-token" }},
		{"outputHeader authorization", []string{`"outputHeader":"Authorization"`}, func(c *Config) bool { return c.OutputHeader == "authorization" }},
		{"outputHeader 128 bytes", []string{`"outputHeader":"` + strings.Repeat("a", 128) + `"`}, func(c *Config) bool { return len(c.OutputHeader) == 128 }},
		{"outputHeader token chars", []string{"\"outputHeader\":\"x!#$%&'*+-.^_`|~9\""}, func(c *Config) bool { return c.OutputHeader == "x!#$%&'*+-.^_`|~9" }},
		{"cacheSlots min", []string{`"cacheSlots":1`}, func(c *Config) bool { return c.CacheSlots == MinCacheSlots }},
		{"cacheSlots max", []string{`"cacheSlots":16384`}, func(c *Config) bool { return c.CacheSlots == MaxCacheSlots }},
		{"failureBackoffMs off", []string{`"failureBackoffMs":0`}, func(c *Config) bool { return c.FailureBackoffMs == 0 }},
		{"failureBackoffMs max", []string{`"failureBackoffMs":600000`}, func(c *Config) bool { return c.FailureBackoffMs == MaxFailureBackoffMs }},
		{"tokenExchange null", []string{`"tokenExchange":null`}, func(c *Config) bool {
			return !c.TokenExchange.Enabled && c.TokenExchange.Audience == "" && c.TokenExchange.RemoveUserTokenHeader
		}},
		{"tokenExchange empty", []string{`"tokenExchange":{}`}, func(c *Config) bool {
			return !c.TokenExchange.Enabled && c.TokenExchange.UserTokenHeader == DefaultUserTokenHeader
		}},
		{"enabled", []string{`"tokenExchange":{"enabled":true}`}, func(c *Config) bool { return c.TokenExchange.Enabled }},
		{"audience", []string{`"tokenExchange":{"audience":"kagenti-api"}`}, func(c *Config) bool { return c.TokenExchange.Audience == "kagenti-api" }},
		{"scope", []string{`"tokenExchange":{"scope":"openid profile"}`}, func(c *Config) bool { return c.TokenExchange.Scope == "openid profile" }},
		{"scope empty", []string{`"tokenExchange":{"scope":""}`}, func(c *Config) bool { return c.TokenExchange.Scope == "" }},
		{"userTokenHeader", []string{`"tokenExchange":{"userTokenHeader":"Authorization"}`}, func(c *Config) bool { return c.TokenExchange.UserTokenHeader == "authorization" }},
		{"removeUserTokenHeader false", []string{`"tokenExchange":{"removeUserTokenHeader":false}`}, func(c *Config) bool { return !c.TokenExchange.RemoveUserTokenHeader }},
		{"all exchange fields", []string{`"tokenExchange":{"enabled":true,"audience":"a","scope":"s","userTokenHeader":"x-u","removeUserTokenHeader":false,` +
			`"expectedIssuer":"https://kc.example.com/realms/demo","allowOpaqueTokens":true,"newKeyExchangesPerSecond":0,"newKeyExchangeBurst":7}`},
			func(c *Config) bool {
				return c.TokenExchange == Exchange{Enabled: true, Audience: "a", Scope: "s", UserTokenHeader: "x-u", RemoveUserTokenHeader: false,
					ExpectedIssuer: "https://kc.example.com/realms/demo", AllowOpaqueTokens: true, NewKeyRate: 0, NewKeyBurst: 7}
			}},
		{"whitespace around document", nil, func(c *Config) bool { return c.ClientID == "txf" }},
		{"escaped key", []string{`"timeout\u004ds":7`}, func(c *Config) bool { return c.TimeoutMs == 7 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := withBase(tt.extra...)
			if tt.name == "whitespace around document" {
				data = append(append([]byte(" \n\t"), data...), " \r\n"...)
			}
			if c := mustParse(t, data); !tt.check(c) {
				t.Errorf("unexpected Config %+v", c)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		url     string
		want    Endpoint
		cluster string
	}{
		{"https://kc.example.com/token",
			Endpoint{Scheme: "https", Authority: "kc.example.com", Host: "kc.example.com", Port: 443, Path: "/token"},
			"outbound|443||kc.example.com"},
		{"http://keycloak.keycloak.svc.cluster.local:8080/realms/demo/protocol/openid-connect/token",
			Endpoint{Scheme: "http", Authority: "keycloak.keycloak.svc.cluster.local:8080", Host: "keycloak.keycloak.svc.cluster.local", Port: 8080, Path: "/realms/demo/protocol/openid-connect/token"},
			"outbound|8080||keycloak.keycloak.svc.cluster.local"},
		{"http://kc/token",
			Endpoint{Scheme: "http", Authority: "kc", Host: "kc", Port: 80, Path: "/token"},
			"outbound|80||kc"},
		{"https://kc.example.com:8443",
			Endpoint{Scheme: "https", Authority: "kc.example.com:8443", Host: "kc.example.com", Port: 8443, Path: "/"},
			"outbound|8443||kc.example.com"},
		{"HTTPS://KC.Example.COM:443/Realms/X?a=1&b=%2F",
			Endpoint{Scheme: "https", Authority: "kc.example.com:443", Host: "kc.example.com", Port: 443, Path: "/Realms/X?a=1&b=%2F"},
			"outbound|443||kc.example.com"},
		{"https://kc.example.com?x=y",
			Endpoint{Scheme: "https", Authority: "kc.example.com", Host: "kc.example.com", Port: 443, Path: "/?x=y"},
			"outbound|443||kc.example.com"},
		{"http://10.0.0.7:8080/t",
			Endpoint{Scheme: "http", Authority: "10.0.0.7:8080", Host: "10.0.0.7", Port: 8080, Path: "/t"},
			"outbound|8080||10.0.0.7"},
		{"https://[FD00::1]:8443/t",
			Endpoint{Scheme: "https", Authority: "[fd00::1]:8443", Host: "fd00::1", Port: 8443, Path: "/t"},
			"outbound|8443||fd00::1"},
		{"https://[::1]/t",
			Endpoint{Scheme: "https", Authority: "[::1]", Host: "::1", Port: 443, Path: "/t"},
			"outbound|443||::1"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			c := mustParse(t, obj(`"tokenEndpoint":"`+tt.url+`"`, fieldClientID, fieldSecret))
			tt.want.URL = tt.url
			if c.TokenEndpoint != tt.want {
				t.Errorf("endpoint:\n got %+v\nwant %+v", c.TokenEndpoint, tt.want)
			}
			if c.Cluster != tt.cluster {
				t.Errorf("cluster = %q, want %q", c.Cluster, tt.cluster)
			}
		})
	}
}

func TestSecretSources(t *testing.T) {
	t.Run("from env", func(t *testing.T) {
		c := mustParse(t, obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"`+testEnvName+`"`))
		if c.ClientSecret != testEnvSecret || c.ClientSecretEnv != testEnvName {
			t.Errorf("secret from env: got ClientSecretEnv=%q, secret matches=%v", c.ClientSecretEnv, c.ClientSecret == testEnvSecret)
		}
	})
	t.Run("from document", func(t *testing.T) {
		c := mustParse(t, withBase())
		if c.ClientSecret != testSecret || c.ClientSecretEnv != "" {
			t.Errorf("secret from document: ClientSecretEnv=%q, secret matches=%v", c.ClientSecretEnv, c.ClientSecret == testSecret)
		}
	})
	t.Run("secret may contain any characters", func(t *testing.T) {
		c := mustParse(t, obj(fieldEndpoint, fieldClientID, `"clientSecret":"a b\n\u00e9\"="`))
		if c.ClientSecret != "a b\né\"=" {
			t.Errorf("secret not decoded as written: %q", c.ClientSecret)
		}
	})
	t.Run("nil getenv", func(t *testing.T) {
		errs := mustFail(t, obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"`+testEnvName+`"`), nil)
		want := Errors{{fClientSecretEnv, `environment variable "TXF_CLIENT_SECRET" of the Wasm VM is not set or empty`}}
		if !reflect.DeepEqual(errs, want) {
			t.Errorf("got %q, want %q", errs, want)
		}
	})
}

// errorCases lists every problem the parser reports, with the exact text, so that the style
// of the one-line log is fixed by the tests.
var errorCases = []struct {
	name string
	data []byte
	want Errors
}{
	// whole document
	{"empty", []byte(""), Errors{{"", "configuration is not valid JSON: it is empty (expected a JSON object with at least tokenEndpoint, clientId and clientSecret)"}}},
	{"whitespace only", []byte(" \n\t "), Errors{{"", "configuration is not valid JSON: it is empty (expected a JSON object with at least tokenEndpoint, clientId and clientSecret)"}}},
	{"invalid JSON", []byte(`{"clientId":"txf",}`), Errors{{"", "configuration is not valid JSON"}}},
	{"truncated JSON", []byte(`{"clientSecret":"` + testSecret), Errors{{"", "configuration is not valid JSON"}}},
	{"trailing garbage", append(withBase(), " x"...), Errors{{"", "configuration is not valid JSON"}}},
	{"array", []byte(`[1]`), Errors{{"", "configuration must be a JSON object, got array"}}},
	{"string", []byte(`"x"`), Errors{{"", "configuration must be a JSON object, got string"}}},
	{"number", []byte(`42`), Errors{{"", "configuration must be a JSON object, got number"}}},
	{"null", []byte(`null`), Errors{{"", "configuration must be a JSON object, got null"}}},
	{"too large", withBase(`"x":"` + strings.Repeat("a", MaxConfigBytes) + `"`), Errors{{"", "configuration is too large (65685 bytes, at most 65536)"}}},

	// required fields
	{"empty object", []byte(`{}`), Errors{
		{"tokenEndpoint", "required"}, {"clientId", "required"}, {"clientSecret", "required (or set clientSecretEnv)"}}},
	{"missing tokenEndpoint", obj(fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "required"}}},
	{"missing clientId", obj(fieldEndpoint, fieldSecret), Errors{{"clientId", "required"}}},
	{"missing secret", obj(fieldEndpoint, fieldClientID), Errors{{"clientSecret", "required (or set clientSecretEnv)"}}},

	// unknown and duplicate fields
	{"unknown field", withBase(`"foo":1`), Errors{{"foo", "unknown field"}}},
	{"unknown field, wrong case", withBase(`"TimeoutMS":1`), Errors{{"TimeoutMS", `unknown field (did you mean "timeoutMs"?)`}}},
	{"unknown field, nested name at top level", withBase(`"audience":"a"`), Errors{{"audience", `unknown field (did you mean "tokenExchange.audience"?)`}}},
	{"unknown field, odd name", withBase(`"a b\n":1`), Errors{{`"a b\n"`, "unknown field"}}},
	{"unknown field, empty name", withBase(`"":1`), Errors{{`""`, "unknown field"}}},
	{"unknown nested field", withBase(`"tokenExchange":{"foo":true}`), Errors{{"tokenExchange.foo", "unknown field"}}},
	{"unknown nested field, top-level name", withBase(`"tokenExchange":{"clientId":"x"}`), Errors{{"tokenExchange.clientId", `unknown field (did you mean "clientId"?)`}}},
	{"unknown nested field, wrong case", withBase(`"tokenExchange":{"Enabled":true}`), Errors{{"tokenExchange.Enabled", `unknown field (did you mean "enabled"?)`}}},
	{"duplicate field", withBase(`"timeoutMs":1`, `"timeoutMs":2`), Errors{{"timeoutMs", "duplicate field"}}},
	{"duplicate secret", withBase(fieldSecret), Errors{{"clientSecret", "duplicate field"}}},
	{"duplicate nested field", withBase(`"tokenExchange":{"enabled":true,"enabled":false}`), Errors{{"tokenExchange.enabled", "duplicate field"}}},

	// tokenEndpoint
	{"tokenEndpoint relative", obj(`"tokenEndpoint":"/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must be an absolute http(s) URL, got "/token"`}}},
	{"tokenEndpoint no scheme", obj(`"tokenEndpoint":"kc.example.com/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must be an absolute http(s) URL, got "kc.example.com/token"`}}},
	{"tokenEndpoint ftp", obj(`"tokenEndpoint":"ftp://kc.example.com/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must be an absolute http(s) URL, got "ftp://kc.example.com/token"`}}},
	{"tokenEndpoint opaque", obj(`"tokenEndpoint":"https:kc.example.com"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must be an absolute http(s) URL, got "https:kc.example.com"`}}},
	{"tokenEndpoint no host", obj(`"tokenEndpoint":"https:///token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must include a host, got "https:///token"`}}},
	{"tokenEndpoint only port", obj(`"tokenEndpoint":"https://:8443/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must include a host, got "https://:8443/token"`}}},
	{"tokenEndpoint empty", obj(`"tokenEndpoint":""`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "must not be empty"}}},
	{"tokenEndpoint userinfo", obj(`"tokenEndpoint":"https://u:`+testSecret+`@kc/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must not contain user information ("user:password@"); the client credentials belong in clientId and clientSecret`}}},
	{"tokenEndpoint fragment", obj(`"tokenEndpoint":"https://kc/token#x"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must not contain a fragment ("#..."), got "https://kc/token#x"`}}},
	{"tokenEndpoint space", obj(`"tokenEndpoint":"https://kc/to ken"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must contain only URL characters (RFC 3986; percent-encode anything else), got "https://kc/to ken"`}}},
	{"tokenEndpoint newline", obj(`"tokenEndpoint":"https://kc/token\n"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must contain only URL characters (RFC 3986; percent-encode anything else), got "https://kc/token\n"`}}},
	{"tokenEndpoint bracket in path", obj(`"tokenEndpoint":"https://kc/a[0]"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must contain only URL characters (RFC 3986; percent-encode anything else), got "https://kc/a[0]"`}}},
	{"tokenEndpoint bad host", obj(`"tokenEndpoint":"https://kc!x/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a valid host, got "https://kc!x/token"`}}},
	{"tokenEndpoint bad IPv6", obj(`"tokenEndpoint":"https://[kc]/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a valid host, got "https://[kc]/token"`}}},
	{"tokenEndpoint unclosed IPv6", obj(`"tokenEndpoint":"https://[::1/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a valid host, got "https://[::1/token"`}}},
	{"tokenEndpoint port 0", obj(`"tokenEndpoint":"https://kc:0/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a port between 1 and 65535, got "https://kc:0/token"`}}},
	{"tokenEndpoint port too big", obj(`"tokenEndpoint":"https://kc:65536/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a port between 1 and 65535, got "https://kc:65536/token"`}}},
	{"tokenEndpoint empty port", obj(`"tokenEndpoint":"https://kc:/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a port between 1 and 65535, got "https://kc:/token"`}}},
	{"tokenEndpoint named port", obj(`"tokenEndpoint":"https://kc:https/token"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must have a port between 1 and 65535, got "https://kc:https/token"`}}},
	{"tokenEndpoint bad percent", obj(`"tokenEndpoint":"https://kc/t%zz"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", `must not contain malformed percent-encoding, got "https://kc/t%zz"`}}},
	{"tokenEndpoint too long", obj(`"tokenEndpoint":"https://kc/`+strings.Repeat("a", MaxURLBytes)+`"`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "must be at most 2048 bytes, got 2059"}}},
	{"tokenEndpoint number", obj(`"tokenEndpoint":1`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "must be a string, got number"}}},
	{"tokenEndpoint null", obj(`"tokenEndpoint":null`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "must be a string, got null"}}},
	{"tokenEndpoint object", obj(`"tokenEndpoint":{}`, fieldClientID, fieldSecret), Errors{{"tokenEndpoint", "must be a string, got object"}}},

	// cluster
	{"cluster empty", withBase(`"cluster":""`), Errors{{"cluster", "must not be empty"}}},
	{"cluster control char", withBase(`"cluster":"a\tb"`), Errors{{"cluster", "must contain only printable ASCII characters (no control characters)"}}},
	{"cluster too long", withBase(`"cluster":"` + strings.Repeat("c", 513) + `"`), Errors{{"cluster", "must be at most 512 bytes, got 513"}}},
	{"cluster array", withBase(`"cluster":[]`), Errors{{"cluster", "must be a string, got array"}}},

	// clientId
	{"clientId empty", obj(fieldEndpoint, `"clientId":""`, fieldSecret), Errors{{"clientId", "must not be empty"}}},
	{"clientId number", obj(fieldEndpoint, `"clientId":7`, fieldSecret), Errors{{"clientId", "must be a string, got number"}}},
	{"clientId null", obj(fieldEndpoint, `"clientId":null`, fieldSecret), Errors{{"clientId", "must be a string, got null"}}},
	{"clientId control char", obj(fieldEndpoint, `"clientId":"a\u0000"`, fieldSecret), Errors{{"clientId", "must contain only printable ASCII characters (no control characters)"}}},
	{"clientId non-ASCII", obj(fieldEndpoint, `"clientId":"caf\u00e9"`, fieldSecret), Errors{{"clientId", "must contain only printable ASCII characters (no control characters)"}}},
	{"clientId too long", obj(fieldEndpoint, `"clientId":"`+strings.Repeat("i", 257)+`"`, fieldSecret), Errors{{"clientId", "must be at most 256 bytes, got 257"}}},

	// client secret
	{"clientSecret empty", obj(fieldEndpoint, fieldClientID, `"clientSecret":""`), Errors{{"clientSecret", "must not be empty"}}},
	{"clientSecret number", obj(fieldEndpoint, fieldClientID, `"clientSecret":12345`), Errors{{"clientSecret", "must be a string, got number"}}},
	{"clientSecret null", obj(fieldEndpoint, fieldClientID, `"clientSecret":null`), Errors{{"clientSecret", "must be a string, got null"}}},
	{"both secret sources", withBase(`"clientSecretEnv":"` + testEnvName + `"`), Errors{{"clientSecretEnv", "set either clientSecret or clientSecretEnv, not both"}}},
	{"env var missing", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"NOPE"`), Errors{{"clientSecretEnv", `environment variable "NOPE" of the Wasm VM is not set or empty`}}},
	{"env var empty", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"EMPTY_VAR"`), Errors{{"clientSecretEnv", `environment variable "EMPTY_VAR" of the Wasm VM is not set or empty`}}},
	{"env name empty", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":""`), Errors{{"clientSecretEnv", "must not be empty"}}},
	{"env name with =", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"A=B"`), Errors{{"clientSecretEnv", `must be an environment variable name (printable ASCII, no spaces or "="), got "A=B"`}}},
	{"env name with space", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"A B"`), Errors{{"clientSecretEnv", `must be an environment variable name (printable ASCII, no spaces or "="), got "A B"`}}},
	{"env name too long", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"`+strings.Repeat("E", 257)+`"`), Errors{{"clientSecretEnv", "must be at most 256 bytes, got 257"}}},
	{"env name boolean", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":true`), Errors{{"clientSecretEnv", "must be a string, got boolean"}}},

	// clientAuth
	{"clientAuth unknown", withBase(`"clientAuth":"jwt"`), Errors{{"clientAuth", `must be "post" or "basic", got "jwt"`}}},
	{"clientAuth case", withBase(`"clientAuth":"Basic"`), Errors{{"clientAuth", `must be "post" or "basic", got "Basic"`}}},
	{"clientAuth empty", withBase(`"clientAuth":""`), Errors{{"clientAuth", `must be "post" or "basic", got ""`}}},
	{"clientAuth boolean", withBase(`"clientAuth":true`), Errors{{"clientAuth", "must be a string, got boolean"}}},

	// timeoutMs
	{"timeoutMs 0", withBase(`"timeoutMs":0`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 0"}}},
	{"timeoutMs negative", withBase(`"timeoutMs":-5`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got -5"}}},
	{"timeoutMs too big", withBase(`"timeoutMs":60001`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 60001"}}},
	{"timeoutMs huge", withBase(`"timeoutMs":1234567890123456789012345678901234567890`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 12345678901234567890123456789012..."}}},
	{"timeoutMs fraction", withBase(`"timeoutMs":1.5`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 1.5"}}},
	{"timeoutMs fraction zero", withBase(`"timeoutMs":1000.0`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 1000.0"}}},
	{"timeoutMs exponent", withBase(`"timeoutMs":5e3`), Errors{{"timeoutMs", "must be an integer between 1 and 60000, got 5e3"}}},
	{"timeoutMs string", withBase(`"timeoutMs":"5000"`), Errors{{"timeoutMs", "must be an integer, got string"}}},
	{"timeoutMs boolean", withBase(`"timeoutMs":true`), Errors{{"timeoutMs", "must be an integer, got boolean"}}},
	{"timeoutMs null", withBase(`"timeoutMs":null`), Errors{{"timeoutMs", "must be an integer, got null"}}},

	// expirySkewSeconds
	{"expirySkewSeconds negative", withBase(`"expirySkewSeconds":-1`), Errors{{"expirySkewSeconds", "must be an integer between 0 and 86400, got -1"}}},
	{"expirySkewSeconds too big", withBase(`"expirySkewSeconds":86401`), Errors{{"expirySkewSeconds", "must be an integer between 0 and 86400, got 86401"}}},
	{"expirySkewSeconds fraction", withBase(`"expirySkewSeconds":0.5`), Errors{{"expirySkewSeconds", "must be an integer between 0 and 86400, got 0.5"}}},
	{"expirySkewSeconds string", withBase(`"expirySkewSeconds":"30"`), Errors{{"expirySkewSeconds", "must be an integer, got string"}}},
	{"expirySkewSeconds null", withBase(`"expirySkewSeconds":null`), Errors{{"expirySkewSeconds", "must be an integer, got null"}}},

	// fallbackToServiceAccount
	{"fallback string", withBase(`"fallbackToServiceAccount":"false"`), Errors{{"fallbackToServiceAccount", "must be a boolean, got string"}}},
	{"fallback number", withBase(`"fallbackToServiceAccount":0`), Errors{{"fallbackToServiceAccount", "must be a boolean, got number"}}},
	{"fallback null", withBase(`"fallbackToServiceAccount":null`), Errors{{"fallbackToServiceAccount", "must be a boolean, got null"}}},

	// outputHeader
	{"outputHeader empty", withBase(`"outputHeader":""`), Errors{{"outputHeader", "must not be empty"}}},
	{"outputHeader space", withBase(`"outputHeader":"x token"`), Errors{{"outputHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x token"`}}},
	{"outputHeader colon inside", withBase(`"outputHeader":"x:y"`), Errors{{"outputHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x:y"`}}},
	{"outputHeader non-ASCII", withBase(`"outputHeader":"x-t\u00f6ken"`), Errors{{"outputHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x-töken"`}}},
	{"outputHeader newline", withBase(`"outputHeader":"x\r\ny"`), Errors{{"outputHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x\r\ny"`}}},
	{"outputHeader pseudo", withBase(`"outputHeader":":authority"`), Errors{{"outputHeader", `must not be a pseudo-header, got ":authority"`}}},
	{"outputHeader too long", withBase(`"outputHeader":"` + strings.Repeat("h", 129) + `"`), Errors{{"outputHeader", "must be at most 128 bytes, got 129"}}},
	{"outputHeader host", withBase(`"outputHeader":"Host"`), Errors{{"outputHeader", `must not be "host" (a header Envoy manages itself)`}}},
	{"outputHeader content-length", withBase(`"outputHeader":"content-length"`), Errors{{"outputHeader", `must not be "content-length" (a header Envoy manages itself)`}}},
	{"outputHeader transfer-encoding", withBase(`"outputHeader":"transfer-encoding"`), Errors{{"outputHeader", `must not be "transfer-encoding" (a header Envoy manages itself)`}}},
	{"outputHeader te", withBase(`"outputHeader":"TE"`), Errors{{"outputHeader", `must not be "te" (a header Envoy manages itself)`}}},
	{"outputHeader connection", withBase(`"outputHeader":"connection"`), Errors{{"outputHeader", `must not be "connection" (a header Envoy manages itself)`}}},
	{"outputHeader number", withBase(`"outputHeader":1`), Errors{{"outputHeader", "must be a string, got number"}}},

	// cacheSlots
	{"cacheSlots 0", withBase(`"cacheSlots":0`), Errors{{"cacheSlots", "must be an integer between 1 and 16384, got 0"}}},
	{"failureBackoffMs negative", withBase(`"failureBackoffMs":-1`), Errors{{"failureBackoffMs", "must be an integer between 0 and 600000, got -1"}}},
	{"failureBackoffMs string", withBase(`"failureBackoffMs":"2s"`), Errors{{"failureBackoffMs", "must be an integer, got string"}}},
	{"cacheSlots too big", withBase(`"cacheSlots":16385`), Errors{{"cacheSlots", "must be an integer between 1 and 16384, got 16385"}}},
	{"cacheSlots string", withBase(`"cacheSlots":"1024"`), Errors{{"cacheSlots", "must be an integer, got string"}}},

	// tokenExchange
	{"tokenExchange boolean", withBase(`"tokenExchange":true`), Errors{{"tokenExchange", "must be an object, got boolean"}}},
	{"tokenExchange array", withBase(`"tokenExchange":[]`), Errors{{"tokenExchange", "must be an object, got array"}}},
	{"tokenExchange string", withBase(`"tokenExchange":"on"`), Errors{{"tokenExchange", "must be an object, got string"}}},
	{"enabled string", withBase(`"tokenExchange":{"enabled":"true"}`), Errors{{"tokenExchange.enabled", "must be a boolean, got string"}}},
	{"enabled null", withBase(`"tokenExchange":{"enabled":null}`), Errors{{"tokenExchange.enabled", "must be a boolean, got null"}}},
	{"audience empty", withBase(`"tokenExchange":{"audience":""}`), Errors{{"tokenExchange.audience", "must not be empty"}}},
	{"audience null", withBase(`"tokenExchange":{"audience":null}`), Errors{{"tokenExchange.audience", "must be a string, got null"}}},
	{"audience array", withBase(`"tokenExchange":{"audience":["a","b"]}`), Errors{{"tokenExchange.audience", "must be a string, got array"}}},
	{"audience control char", withBase(`"tokenExchange":{"audience":"a\nb"}`), Errors{{"tokenExchange.audience", "must contain only printable ASCII characters (no control characters)"}}},
	{"audience too long", withBase(`"tokenExchange":{"audience":"` + strings.Repeat("a", 257) + `"}`), Errors{{"tokenExchange.audience", "must be at most 256 bytes, got 257"}}},
	{"scope control char", withBase(`"tokenExchange":{"scope":"openid\u007f"}`), Errors{{"tokenExchange.scope", "must contain only printable ASCII characters (no control characters)"}}},
	{"scope too long", withBase(`"tokenExchange":{"scope":"` + strings.Repeat("s", 1025) + `"}`), Errors{{"tokenExchange.scope", "must be at most 1024 bytes, got 1025"}}},
	{"scope number", withBase(`"tokenExchange":{"scope":1}`), Errors{{"tokenExchange.scope", "must be a string, got number"}}},
	{"userTokenHeader pseudo", withBase(`"tokenExchange":{"userTokenHeader":":path"}`), Errors{{"tokenExchange.userTokenHeader", `must not be a pseudo-header, got ":path"`}}},
	{"userTokenHeader empty", withBase(`"tokenExchange":{"userTokenHeader":""}`), Errors{{"tokenExchange.userTokenHeader", "must not be empty"}}},
	{"userTokenHeader space", withBase(`"tokenExchange":{"userTokenHeader":"x user"}`), Errors{{"tokenExchange.userTokenHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x user"`}}},
	{"userTokenHeader too long", withBase(`"tokenExchange":{"userTokenHeader":"` + strings.Repeat("u", 129) + `"}`), Errors{{"tokenExchange.userTokenHeader", "must be at most 128 bytes, got 129"}}},
	{"userTokenHeader object", withBase(`"tokenExchange":{"userTokenHeader":{}}`), Errors{{"tokenExchange.userTokenHeader", "must be a string, got object"}}},
	{"removeUserTokenHeader number", withBase(`"tokenExchange":{"removeUserTokenHeader":1}`), Errors{{"tokenExchange.removeUserTokenHeader", "must be a boolean, got number"}}},

	// several problems at once, in document order; missing fields come last
	{"many problems in document order", obj(
		`"timeoutMs":0`,
		`"tokenEndpoint":"/token"`,
		`"tokenExchange":{"enabled":"yes","foo":1,"audience":""}`,
		`"clientSecret":"`+testSecret+`"`,
		`"clientSecretEnv":"`+testEnvName+`"`,
		`"bar":null`,
		`"outputHeader":"x y"`,
		`"clientAuth":"basic"`,
		`"cacheSlots":1.5`,
	), Errors{
		{"timeoutMs", "must be an integer between 1 and 60000, got 0"},
		{"tokenEndpoint", `must be an absolute http(s) URL, got "/token"`},
		{"tokenExchange.enabled", "must be a boolean, got string"},
		{"tokenExchange.foo", "unknown field"},
		{"tokenExchange.audience", "must not be empty"},
		{"clientSecretEnv", "set either clientSecret or clientSecretEnv, not both"},
		{"bar", "unknown field"},
		{"outputHeader", `must be a valid HTTP header name (RFC 7230 token characters), got "x y"`},
		{"cacheSlots", "must be an integer between 1 and 16384, got 1.5"},
		{"clientId", "required"},
	}},
	{"env problem in document order", obj(
		`"clientSecretEnv":"NOPE"`,
		`"clientId":""`,
		fieldEndpoint,
	), Errors{
		{"clientSecretEnv", `environment variable "NOPE" of the Wasm VM is not set or empty`},
		{"clientId", "must not be empty"},
	}},
	{"wrong type and both secret sources", obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":1`, fieldSecret), Errors{
		{"clientSecretEnv", "must be a string, got number"},
		{"clientSecretEnv", "set either clientSecret or clientSecretEnv, not both"},
	}},
}

func TestErrors(t *testing.T) {
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			errs := mustFail(t, tt.data, testGetenv)
			if !reflect.DeepEqual(errs, tt.want) {
				t.Errorf("errors:\n got %q\nwant %q", errs, tt.want)
			}
		})
	}
}

// TestNoSecretInErrors scans every error text for the client secret and the value of the
// environment variable, including the cases where the secret sits right next to the problem.
func TestNoSecretInErrors(t *testing.T) {
	envSet := func(string) (string, bool) { return testEnvSecret, true }
	envEmpty := func(string) (string, bool) { return "", true }
	extra := [][]byte{
		obj(fieldEndpoint, fieldClientID, fieldSecret, fieldSecret),
		obj(`"tokenEndpoint":"https://client:`+testSecret+`@kc/token"`, fieldClientID, fieldSecret),
		obj(`"tokenEndpoint":"ftp://client:`+testSecret+`@kc/token"`, fieldClientID, fieldSecret),
		obj(`"tokenEndpoint":"/`+testSecret+`@"`, fieldClientID, fieldSecret),
		obj(fieldEndpoint, fieldClientID, fieldSecret, `"clientSecretEnv":"`+testEnvName+`"`),
		obj(fieldEndpoint, `"clientId":"`+testSecret+"\x01"+`"`, fieldSecret),
		obj(fieldEndpoint, fieldClientID, fieldSecret, `"tokenExchange":{"scope":"`+testSecret+"\n"+`"}`),
		obj(fieldEndpoint, fieldClientID, fieldSecret, `"tokenExchange":{"audience":"`+testSecret+strings.Repeat("x", 300)+`"}`),
		obj(fieldEndpoint, fieldClientID, `"clientSecretEnv":"`+testEnvName+`"`, `"timeoutMs":0`),
		obj(`"clientSecret":"` + testSecret + `"`),
		[]byte(`{"clientSecret":"` + testSecret + `",}`),
	}
	var docs [][]byte
	for _, tt := range errorCases {
		docs = append(docs, tt.data)
	}
	docs = append(docs, extra...)
	n := 0
	for _, getenv := range []func(string) (string, bool){testGetenv, envSet, envEmpty, nil} {
		for _, data := range docs {
			_, err := Parse(data, getenv)
			if err == nil {
				continue
			}
			n++
			msg := err.Error()
			if strings.Contains(msg, testSecret) || strings.Contains(msg, testEnvSecret) {
				t.Errorf("error text leaks a secret: %q (document %q)", msg, data)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("error text is not one line: %q", msg)
			}
		}
	}
	if n < len(docs) {
		t.Errorf("only %d of %d documents failed; the table is meant to hold failing documents", n, len(docs))
	}
}

func TestErrorsString(t *testing.T) {
	errs := mustFail(t, obj(`"timeoutMs":0`, `"foo":1`), testGetenv)
	want := "invalid plugin configuration: timeoutMs: must be an integer between 1 and 60000, got 0; " +
		"foo: unknown field; tokenEndpoint: required; clientId: required; clientSecret: required (or set clientSecretEnv)"
	if got := errs.Error(); got != want {
		t.Errorf("Error() =\n %q\nwant\n %q", got, want)
	}
	if got := (Errors{{Problem: "configuration is not valid JSON"}}).Error(); got != "invalid plugin configuration: configuration is not valid JSON" {
		t.Errorf("whole-document Error() = %q", got)
	}
	if got := (Errors{}).Error(); got != "invalid plugin configuration" {
		t.Errorf("empty Errors.Error() = %q", got)
	}
}

func TestNamespace(t *testing.T) {
	ns := func(url, clientID string) string {
		t.Helper()
		return mustParse(t, obj(`"tokenEndpoint":"`+url+`"`, `"clientId":"`+clientID+`"`, fieldSecret)).Namespace()
	}
	a := ns("https://kc.example.com/token", "txf")
	if !regexp.MustCompile(`^txf2:[0-9a-f]{8}$`).MatchString(a) {
		t.Fatalf("Namespace() = %q, want txf2: and 8 hex digits", a)
	}
	if b := ns("https://kc.example.com/token", "txf"); a != b {
		t.Errorf("not stable: %q then %q", a, b)
	}
	for _, same := range [][2]string{
		{"HTTPS://KC.example.com/token", "txf"},
		{"https://kc.example.com:443/token", "txf"},
	} {
		if b := ns(same[0], same[1]); a != b {
			t.Errorf("%v: namespace %q, want %q (same endpoint)", same, b, a)
		}
	}
	for _, other := range [][2]string{
		{"https://kc.example.com/token", "other"},
		{"https://kc.example.com/token2", "txf"},
		{"http://kc.example.com/token", "txf"},
		{"https://kc.example.com:8443/token", "txf"},
		{"https://kc2.example.com/token", "txf"},
		{"https://kc.example.com/tokentx", "f"}, // length prefixes keep the pair unambiguous
	} {
		if b := ns(other[0], other[1]); a == b {
			t.Errorf("%v: same namespace %q as the base configuration", other, b)
		}
	}
	// The secret must not influence the namespace (nor could it be derived from it).
	c := mustParse(t, obj(`"tokenEndpoint":"https://kc.example.com/token"`, fieldClientID, `"clientSecret":"another"`))
	if c.Namespace() != a {
		t.Errorf("namespace depends on the secret")
	}
}

func TestRefreshAndMinLifetime(t *testing.T) {
	c, err := Parse([]byte(`{"tokenEndpoint":"https://kc.example.com/t","clientId":"a","clientSecret":"s",
		"refreshAheadSeconds":0,"minLifetimeSeconds":30,
		"rules":[{"pathPrefix":"/sse","minLifetimeSeconds":120},{"pathPrefix":"/api"}]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.RefreshAheadSeconds != 0 || c.MinLifetimeSeconds != 30 {
		t.Errorf("refreshAheadSeconds %d, minLifetimeSeconds %d", c.RefreshAheadSeconds, c.MinLifetimeSeconds)
	}
	if c.Rules[0].MinLifetimeSeconds != 120 || c.Rules[1].MinLifetimeSeconds != 30 {
		t.Errorf("rules' minLifetimeSeconds %d, %d: want their own 120, the inherited 30", c.Rules[0].MinLifetimeSeconds, c.Rules[1].MinLifetimeSeconds)
	}
	for doc, want := range map[string]string{
		`"refreshAheadSeconds":3601`:                              "refreshAheadSeconds",
		`"minLifetimeSeconds":-1`:                                 "minLifetimeSeconds",
		`"rules":[{"pathPrefix":"/x","minLifetimeSeconds":"60"}]`: "rules[0].minLifetimeSeconds",
	} {
		_, err := Parse([]byte(`{"tokenEndpoint":"https://kc.example.com/t","clientId":"a","clientSecret":"s",`+doc+`}`), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %s", doc, err, want)
		}
	}
}
