package oauth

import "testing"

func BenchmarkExchangeForm(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ExchangeForm(testJWT, testAud, "profile email", postClient)
	}
}

func BenchmarkParseResponse(b *testing.B) {
	b.Run("expires_in", func(b *testing.B) {
		body := successBody(testJWT, "300")
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, f := ParseResponse(200, 6, body, testNowMs); f != nil {
				b.Fatal(f)
			}
		}
	})
	b.Run("jwt_exp", func(b *testing.B) {
		body := successBody(testJWT, "")
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, f := ParseResponse(200, 6, body, testNowMs); f != nil {
				b.Fatal(f)
			}
		}
	})
	b.Run("keycloak_error", func(b *testing.B) {
		body := oauthError("invalid_request", "Standard token exchange is not enabled for the requested client")
		b.ReportAllocs()
		for b.Loop() {
			ParseResponse(400, 6, body, testNowMs)
		}
	})
}
