package plugin

import (
	"errors"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// nowMs is the wall clock in Unix milliseconds. Inside Envoy it is WASI clock_time_get; Go-mode
// tests replace it to move time without sleeping.
var nowMs = func() int64 { return time.Now().UnixMilli() }

// sharedStore is cache.Store over Envoy's shared data.
type sharedStore struct{}

func (sharedStore) Get(key string) ([]byte, uint32, error) {
	v, cas, err := proxywasm.GetSharedData(key)
	switch {
	case err == nil:
		return v, cas, nil
	case errors.Is(err, types.ErrorStatusNotFound):
		return nil, 0, cache.ErrNotFound
	default:
		return nil, 0, err
	}
}

func (sharedStore) Set(key string, value []byte, cas uint32) error {
	err := proxywasm.SetSharedData(key, value, cas)
	if errors.Is(err, types.ErrorStatusCasMismatch) {
		return cache.ErrCasMismatch
	}
	return err
}

// headerValue returns the value of name in a header list (names are lower-case on the wire).
func headerValue(headers [][2]string, name string) string {
	for _, h := range headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// atoiStatus parses an HTTP status code; anything else is 0.
func atoiStatus(s string) int {
	if len(s) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}
