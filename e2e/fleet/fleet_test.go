package fleet

import (
	"strconv"
	"testing"
)

// Consistent hashing spreads keys evenly enough, and a leaving backend moves only its own keys:
// about 1/n of them.
func TestRingSpreadsAndMovesOnlyTheLeavingBackendsKeys(t *testing.T) {
	keys := make([]string, 20000)
	for i := range keys {
		keys[i] = "user-token-" + strconv.Itoa(i)
	}
	for _, n := range []int{2, 4, 8, 16} {
		ring := Ring(n)
		count := make([]int, n)
		for _, k := range keys {
			count[Owner(ring, k)]++
		}
		for i, c := range count {
			if share := float64(c) / float64(len(keys)); share < 0.6/float64(n) || share > 1.4/float64(n) {
				t.Errorf("n=%d: backend %d owns %.3f of the keys, want about %.3f", n, i, share, 1/float64(n))
			}
		}
		share, only := Remapped(n, n-1, keys)
		if !only {
			t.Errorf("n=%d: keys of staying backends moved", n)
		}
		if share < 0.6/float64(n) || share > 1.4/float64(n) {
			t.Errorf("n=%d: %.3f of the keys moved when one backend left, want about %.3f", n, share, 1/float64(n))
		}
	}
}
