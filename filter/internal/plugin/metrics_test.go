package plugin

import (
	"testing"
)

func (h *harness) counter(name string) uint64 {
	h.t.Helper()
	v, err := h.host.GetCounterMetric(name)
	if err != nil {
		h.t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

func (h *harness) gaugeValue(name string) uint64 {
	h.t.Helper()
	v, err := h.host.GetGaugeMetric(name)
	if err != nil {
		h.t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

// The filter's metrics count what happened: exchanges by result, cache hits and misses,
// fallbacks by reason, local replies by status, held and joined requests, service-token fetches.
func TestMetricsCountWhatHappened(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()

		a, _ := h.userRequest(testUserToken)
		b, _ := h.userRequest(testUserToken) // joins a's exchange
		if got := h.gaugeValue(metricHeld); got != 2 {
			t.Fatalf("%s = %d while two requests wait, want 2", metricHeld, got)
		}
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
		h.wantForwarded(a, testExchanged)
		h.wantForwarded(b, testExchanged)
		h.userRequest(testUserToken) // hit

		c, _ := h.userRequest(testUserToken2)
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "400", `{"error":"invalid_grant"}`)
		h.wantForwarded(c, testServiceToken)
		h.request()                                  // no user token
		h.request([2]string{headerUserToken, "a b"}) // not a token

		want := map[string]uint64{
			metricServiceSuccess:                             1,
			metricExchangeSuccess:                            1,
			metricExchangeFailurePrefix + "subject_rejected": 1,
			metricCacheHit:                                   1,
			metricCacheMiss:                                  3,
			metricJoined:                                     1,
			metricFallbackExchangeFailed:                     1,
			metricFallbackNoUserToken:                        1,
			metricFallbackInvalidToken:                       1,
		}
		for name, v := range want {
			if got := h.counter(name); got != v {
				t.Errorf("%s = %d, want %d", name, got, v)
			}
		}
		if got := h.gaugeValue(metricHeld); got != 0 {
			t.Errorf("%s = %d after every request was settled, want 0", metricHeld, got)
		}
	})
}

func TestMetricsCountLocalReplies(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn+`,"fallbackToServiceAccount":false`))
		h.request()
		id, _ := h.userRequest(testUserToken)
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "503", "")
		h.wantReply(id, 502, "token_exchange_failed")
		if got := h.counter(metricReplyPrefix + "401"); got != 1 {
			t.Errorf("401 replies = %d, want 1", got)
		}
		if got := h.counter(metricReplyPrefix + "502"); got != 1 {
			t.Errorf("502 replies = %d, want 1", got)
		}
		if got := h.counter(metricExchangeFailurePrefix + "transient"); got != 1 {
			t.Errorf("transient failures = %d, want 1", got)
		}
	})
}
