package plugin

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
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
	metricFallbackExchangeFailed = "token_exchange.fallback.exchange_failed"
	metricReplyPrefix            = "token_exchange.local_reply." // + status
	metricHeld                   = "token_exchange.requests_held"
	metricJoined                 = "token_exchange.requests_joined_inflight"
	metricServiceSuccess         = "token_exchange.service_token.fetch_success"
	metricServiceFailure         = "token_exchange.service_token.fetch_failure"
	metricBackedOff              = "token_exchange.requests_backed_off"
	metricPassedThrough          = "token_exchange.requests_passed_through"
)

// counter and gauge wrap the SDK's metrics, which panic when the host refuses a call: a metric
// must never trap the VM, so a refused metric is simply not counted.
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
	if !c.ok {
		return
	}
	defer func() { _ = recover() }()
	c.id.Increment(1)
}

func (g gauge) add(delta int64) {
	if !g.ok {
		return
	}
	defer func() { _ = recover() }()
	g.id.Add(delta)
}

type metrics struct {
	exchangeSuccess counter
	exchangeFailure [oauth.Malformed + 1]counter // by failure class
	cacheHit        counter
	cacheMiss       counter
	fallbackNoToken counter
	fallbackInvalid counter
	fallbackFailed  counter
	reply401        counter
	reply502        counter
	reply503        counter
	held            gauge
	joined          counter
	serviceSuccess  counter
	serviceFailure  counter
	backedOff       counter
	passedThrough   counter
}

func newMetrics() *metrics {
	m := &metrics{
		exchangeSuccess: defineCounter(metricExchangeSuccess),
		cacheHit:        defineCounter(metricCacheHit),
		cacheMiss:       defineCounter(metricCacheMiss),
		fallbackNoToken: defineCounter(metricFallbackNoUserToken),
		fallbackInvalid: defineCounter(metricFallbackInvalidToken),
		fallbackFailed:  defineCounter(metricFallbackExchangeFailed),
		reply401:        defineCounter(metricReplyPrefix + "401"),
		reply502:        defineCounter(metricReplyPrefix + "502"),
		reply503:        defineCounter(metricReplyPrefix + "503"),
		held:            defineGauge(metricHeld),
		joined:          defineCounter(metricJoined),
		serviceSuccess:  defineCounter(metricServiceSuccess),
		serviceFailure:  defineCounter(metricServiceFailure),
		backedOff:       defineCounter(metricBackedOff),
		passedThrough:   defineCounter(metricPassedThrough),
	}
	for _, c := range []oauth.Class{oauth.Transient, oauth.SubjectRejected, oauth.Configuration, oauth.Malformed} {
		m.exchangeFailure[c] = defineCounter(metricExchangeFailurePrefix + c.String())
	}
	return m
}

func (m *metrics) exchangeFailed(c oauth.Class) {
	if int(c) < len(m.exchangeFailure) {
		m.exchangeFailure[c].inc()
	}
}

func (m *metrics) replied(status uint32) {
	switch status {
	case 401:
		m.reply401.inc()
	case 502:
		m.reply502.inc()
	case 503:
		m.reply503.inc()
	}
}
