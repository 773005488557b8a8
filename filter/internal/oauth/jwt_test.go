package oauth

import (
	"encoding/base64"
	"testing"
)

func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

func TestUserTokenExpiry(t *testing.T) {
	cases := []struct {
		name  string
		token string
		exp   int64
		ok    bool
	}{
		{"keycloak token", jwtWith(`{"exp":1764680000,"iat":1764679700,"sub":"x"}`), 1764680000, true},
		{"fractional exp", jwtWith(`{"exp":1764680000.5}`), 1764680000, true},
		{"padded payload", jwtWith(`{"exp":12}`) + "", 12, true},
		{"no exp", jwtWith(`{"sub":"x"}`), 0, false},
		{"exp as string", jwtWith(`{"exp":"1764680000"}`), 0, false},
		{"negative exp", jwtWith(`{"exp":-1}`), 0, false},
		{"absurd exp", jwtWith(`{"exp":1e300}`), 0, false},
		{"payload not an object", jwtWith(`[1,2]`), 0, false},
		{"payload not JSON", jwtWith(`{"exp":1`), 0, false},
		{"opaque token", "c2VjcmV0LW9wYXF1ZS10b2tlbg", 0, false},
		{"two parts", "a.b", 0, false},
		{"four parts (JWE has five)", "a.b.c.d", 0, false},
		{"empty payload", "a..c", 0, false},
		{"empty signature", jwtWith(`{"exp":1}`)[:len(jwtWith(`{"exp":1}`))-4], 0, false},
		{"payload not base64url", "a.!!!.c", 0, false},
	}
	for _, tc := range cases {
		c := ReadUserClaims(tc.token)
		exp, ok := c.Exp, c.HasExp
		if exp != tc.exp || ok != tc.ok {
			t.Errorf("%s: got %d %v, want %d %v", tc.name, exp, ok, tc.exp, tc.ok)
		}
	}
}

func FuzzUserTokenExpiry(f *testing.F) {
	f.Add(jwtWith(`{"exp":1764680000}`))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		if c := ReadUserClaims(tok); c.HasExp && c.Exp < 0 {
			t.Fatalf("negative exp %d accepted", c.Exp)
		}
	})
}

func TestReadUserClaims(t *testing.T) {
	c := ReadUserClaims(jwtWith(`{"exp":10,"iss":"https://kc.example.com/realms/demo"}`))
	if !c.JWT || c.Exp != 10 || !c.HasExp || c.Issuer != "https://kc.example.com/realms/demo" {
		t.Errorf("%+v", c)
	}
	if c := ReadUserClaims(jwtWith(`{"iss":42}`)); !c.JWT || c.HasExp || c.Issuer != "" {
		t.Errorf("numeric iss: %+v", c)
	}
	for _, opaque := range []string{"c2VjcmV0LW9wYXF1ZS10b2tlbg", "a.b.c.d.e", jwtWith(`"string"`), "x.e30"} {
		if c := ReadUserClaims(opaque); c.JWT {
			t.Errorf("%q read as a JWT", opaque)
		}
	}
}
