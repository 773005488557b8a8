package plugin

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

	"github.com/kagenti/token-exchange-filter/filter/internal/coord"
)

// Metric names, all under token_exchange. (Envoy exports them as wasmcustom.token_exchange.*).
// Each VM defines them; Envoy keeps one value per name for the whole process.
const (
	metricExchangeSuccess        = "token_exchange.exchange.success"
	metricExchangeFailurePrefix  = "token_exchange.exchange.failure." // + failure class
	metricCacheHit               = "token_exchange.cache.hit"
	metricCacheMiss              = "token_exchange.cache.miss"
	metricFallbackNoUserToken    = "token_exchange.fallback.no_user_token"
	metricFallbackInvalidToken   = "token_exchange.fallback.invalid_user_token"
	metricFallbackExpiredToken   = "token_exchange.fallback.expired_user_token"
	metricFallbackRateLimited    = "token_exchange.fallback.new_key_rate_limited"
	metricFallbackExchangeFailed = "token_exchange.fallback.exchange_failed"
	metricReplyPrefix            = "token_exchange.local_reply." // + status
	metricHeld                   = "token_exchange.requests_held"
	metricJoined                 = "token_exchange.requests_joined_inflight"
	metricServiceSuccess         = "token_exchange.service_token.fetch_success"
	metricServiceFailure         = "token_exchange.service_token.fetch_failure"
	metricBackedOff              = "token_exchange.requests_backed_off"
	metricPassedThrough          = "token_exchange.requests_passed_through"
	metricRefreshPrefix          = "token_exchange.refresh." // + started, success, failure
)

// counter and gauge wrap the host's metrics: a metric must never trap the VM, so a refused
// definition or increment is simply not counted (the SDK's wrappers panic on either; its
// definitions are recovered from here, its increments bypassed by incrementMetric).
type counter struct {
	id proxywasm.MetricCounter
	ok bool
}

type gauge struct {
	id proxywasm.MetricGauge
	ok bool
}

func defineCounter(name string) (c counter) {
	defer func() { _ = recover() }()
	c.id = proxywasm.DefineCounterMetric(name)
	c.ok = true
	return c
}

func defineGauge(name string) (g gauge) {
	defer func() { _ = recover() }()
	g.id = proxywasm.DefineGaugeMetric(name)
	g.ok = true
	return g
}

func (c counter) inc() {
	if c.ok {
		incrementMetric(uint32(c.id), 1)
	}
}

func (g gauge) add(delta int64) {
	if g.ok {
		incrementMetric(uint32(g.id), delta)
	}
}

// metrics maps coord's metrics to the host's: a counter each, the held requests a gauge.
type metrics struct {
	counters [coord.NumMetrics]counter
	held     gauge
}

// metricNames names each of coord's metrics.
var metricNames = [coord.NumMetrics]string{
	coord.ExchangeSuccess:                metricExchangeSuccess,
	coord.ExchangeFailureTransient:       metricExchangeFailurePrefix + "transient",
	coord.ExchangeFailureSubjectRejected: metricExchangeFailurePrefix + "subject_rejected",
	coord.ExchangeFailureConfiguration:   metricExchangeFailurePrefix + "configuration",
	coord.ExchangeFailureMalformed:       metricExchangeFailurePrefix + "malformed",
	coord.CacheHit:                       metricCacheHit,
	coord.CacheMiss:                      metricCacheMiss,
	coord.FallbackNoUserToken:            metricFallbackNoUserToken,
	coord.FallbackInvalidUserToken:       metricFallbackInvalidToken,
	coord.FallbackExpiredUserToken:       metricFallbackExpiredToken,
	coord.FallbackRateLimited:            metricFallbackRateLimited,
	coord.FallbackExchangeFailed:         metricFallbackExchangeFailed,
	coord.Reply401:                       metricReplyPrefix + "401",
	coord.Reply502:                       metricReplyPrefix + "502",
	coord.Reply503:                       metricReplyPrefix + "503",
	coord.RequestsHeld:                   metricHeld,
	coord.RequestsJoined:                 metricJoined,
	coord.ServiceFetchSuccess:            metricServiceSuccess,
	coord.ServiceFetchFailure:            metricServiceFailure,
	coord.RequestsBackedOff:              metricBackedOff,
	coord.RequestsPassedThrough:          metricPassedThrough,
	coord.RefreshStarted:                 metricRefreshPrefix + "started",
	coord.RefreshSuccess:                 metricRefreshPrefix + "success",
	coord.RefreshFailure:                 metricRefreshPrefix + "failure",
}

func newMetrics() *metrics {
	m := &metrics{held: defineGauge(metricHeld)}
	for i, name := range metricNames {
		if coord.Metric(i) != coord.RequestsHeld {
			m.counters[i] = defineCounter(name)
		}
	}
	return m
}

func (m *metrics) add(metric coord.Metric, delta int64) {
	switch {
	case metric == coord.RequestsHeld:
		m.held.add(delta)
	case metric < coord.NumMetrics:
		m.counters[metric].inc()
	}
}
