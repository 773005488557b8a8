//go:build !wasip1

package plugin

import (
	"errors"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// Go-mode tests: the same calls through the SDK, which routes them to its emulator.

func requestHeader(name string) (string, bool) {
	v, err := proxywasm.GetHttpRequestHeader(name)
	return v, err == nil
}

func responseHeader(name string) (string, bool) {
	v, err := proxywasm.GetHttpResponseHeader(name)
	return v, err == nil
}

func peekSharedData(key string) ([]byte, uint32, error) { return sharedData(key) }

// incrementMetric: the SDK's emulator panics on an unknown metric, where Envoy answers a status.
func incrementMetric(metricID uint32, offset int64) {
	defer func() { _ = recover() }()
	proxywasm.MetricGauge(metricID).Add(offset)
}

func setRequestHeader(name, value string) error {
	return proxywasm.ReplaceHttpRequestHeader(name, value)
}

func sharedData(key string) ([]byte, uint32, error) {
	v, cas, err := proxywasm.GetSharedData(key)
	switch {
	case err == nil:
		return v, cas, nil
	case errors.Is(err, types.ErrorStatusNotFound):
		return nil, 0, cache.ErrNotFound
	default:
		return nil, 0, errSharedDataRefused
	}
}
