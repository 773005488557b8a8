package oauth

import (
	"strings"
	"testing"
)

func TestValidUserToken(t *testing.T) {
	tests := []struct {
		tok  string
		want bool
	}{
		{testJWT, true},
		{testOpaque, true},
		{"a", true},
		{"AZaz09-._~+/", true},
		{"YWJj=", true},
		{"YWI==", true},
		{"a.b.c", true},
		{"", false},
		{"=", false},
		{"==", false},
		{"a=b", false},
		{"a=.b", false},
		{"a b", false},
		{"a,b", false},
		{`"abc"`, false},
		{"abc\n", false},
		{"abc\x00", false},
		{"tök", false},
		{"a;b", false},
		{strings.Repeat("a", MaxTokenBytes), true},
		{strings.Repeat("a", MaxTokenBytes-2) + "==", true},
		{strings.Repeat("a", MaxTokenBytes+1), false},
	}
	for _, tc := range tests {
		if got := ValidUserToken(tc.tok); got != tc.want {
			t.Errorf("ValidUserToken(%.40q) = %v, want %v", tc.tok, got, tc.want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		in, tok string
		ok      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"BeArEr    abc.def", "abc.def", true},
		{"Bearer abc  ", "abc", true},
		{"Bearer abc\t", "abc", true},
		{"Bearer " + testJWT, testJWT, true},
		{"Bearer a b", "a b", true}, // shape is ValidUserToken's business
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer    ", "", false},
		{"Bearerabc", "", false},
		{"Bearer\tabc", "", false},
		{"Basic YWxhZGRpbjpvcGVuc2VzYW1l", "", false},
		{"DPoP abc", "", false},
		{"Bearex abc", "", false},
		{"abc", "", false},
		{"", "", false},
		{" Bearer abc", "", false},
	}
	for _, tc := range tests {
		tok, ok := BearerToken(tc.in)
		if tok != tc.tok || ok != tc.ok {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %v", tc.in, tok, ok, tc.tok, tc.ok)
		}
	}
}

func TestTokenHelpersDoNotAllocate(t *testing.T) {
	h := "Bearer " + testJWT
	n := testing.AllocsPerRun(100, func() {
		tok, _ := BearerToken(h)
		_ = ValidUserToken(tok)
	})
	if n != 0 {
		t.Errorf("allocations: %v", n)
	}
}

func TestFingerprint(t *testing.T) {
	// SHA-256("abc") = ba7816bf8f01cfea…
	if got := Fingerprint("abc"); got != "ba7816bf" {
		t.Errorf("Fingerprint(abc) = %q", got)
	}
	if len(Fingerprint(testJWT)) != 8 || Fingerprint(testJWT) == Fingerprint(testOpaque) {
		t.Errorf("fingerprints: %q %q", Fingerprint(testJWT), Fingerprint(testOpaque))
	}
}
