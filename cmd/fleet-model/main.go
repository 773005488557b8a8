// Command fleet-model extrapolates what a gateway fleet costs the IdP and each proxy's cache,
// from the per-proxy behaviour measured by make bench (fleet_* and users_* fields), to fleet
// sizes that cannot be run here. It prints a Markdown table (the README's "Running a fleet").
//
//	go run ./cmd/fleet-model [-replicas 1,4,20] [-users 10000,200000] [-lifetime 300] [-requests 20]
//	                         [-entry-bytes 854] [-slots 1024]
//
// The model, per token lifetime:
//
//   - round robin (or any balancing that ignores the user): a user with k requests reaches
//     R(1-(1-1/R)^k) of the R proxies, each of which exchanges once (measured: 8.00 exchanges per
//     user with 8 proxies and 12 requests each, strict round robin);
//   - consistent hashing on the user token header: one proxy per user, one exchange (measured: 1.00);
//   - each proxy caches the users it sees, in cacheSlots × 4 entries of about entry-bytes each
//     (measured: 3,500,084 shared-data bytes for the 4,096 entries of 1,024 slots, Keycloak-sized
//     tokens); users beyond that are evicted and exchanged again, which the model does not add.
//
// The refresh ahead of expiry multiplies both rates by lifetime/(usable lifetime - refreshAheadSeconds)
// for users active across the whole lifetime (1.43 with the defaults); the table leaves it out.
package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

func main() {
	replicas := flag.String("replicas", "1,4,20", "gateway replicas (comma-separated)")
	users := flag.String("users", "10000,200000", "active users (comma-separated)")
	lifetime := flag.Float64("lifetime", 300, "exchanged token lifetime, seconds (Keycloak's default 300)")
	requests := flag.Float64("requests", 20, "requests per active user per token lifetime")
	entryBytes := flag.Float64("entry-bytes", 854, "shared-data bytes per cached user (make bench: users_100k_shared_bytes / 4096)")
	slots := flag.Int("slots", 1024, "cacheSlots of each proxy (4 users each)")
	flag.Parse()
	rs, err := ints(*replicas)
	if err != nil {
		fail(err)
	}
	us, err := ints(*users)
	if err != nil {
		fail(err)
	}
	var rows []row
	for _, u := range us {
		for _, r := range rs {
			rows = append(rows, model(r, u, *lifetime, *requests, *entryBytes, *slots))
		}
	}
	print(os.Stdout, rows, *lifetime, *requests, *slots)
}

// row is one fleet: replicas, users, and what each balancing costs.
type row struct {
	replicas, users               int
	rrPerSecond, hashPerSecond    float64 // exchanges per second at the IdP
	rrUsersPerProxy, hashPerProxy float64 // users each proxy must cache
	rrBytes, hashBytes            float64 // their shared-data bytes, per proxy (before the cache bound)
	slotsNeeded                   int     // cacheSlots for the hashed fleet's users to fit (at 75% load)
	capacity                      int     // users the configured slots hold
}

func model(replicas, users int, lifetime, requests, entryBytes float64, slots int) row {
	r := float64(replicas)
	reached := r * (1 - math.Pow(1-1/r, requests)) // proxies a user's requests reach
	rrPerProxy := float64(users) * reached / r
	hashPerProxy := float64(users) / r
	return row{
		replicas: replicas, users: users,
		rrPerSecond:     float64(users) * reached / lifetime,
		hashPerSecond:   float64(users) / lifetime,
		rrUsersPerProxy: rrPerProxy, hashPerProxy: hashPerProxy,
		rrBytes: rrPerProxy * entryBytes, hashBytes: hashPerProxy * entryBytes,
		slotsNeeded: int(math.Ceil(hashPerProxy / 4 / 0.75)),
		capacity:    slots * 4,
	}
}

func print(w io.Writer, rows []row, lifetime, requests float64, slots int) {
	fmt.Fprintf(w, "Extrapolated (cmd/fleet-model): %g s tokens, %g requests per user per lifetime, cacheSlots %d (%d users per proxy).\n\n",
		lifetime, requests, slots, slots*4)
	fmt.Fprintln(w, "| replicas | active users | IdP exchanges/s, round robin | IdP exchanges/s, consistent hash | users cached per proxy, rr / hash | shared data per proxy, rr / hash | cacheSlots for the hashed share |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s / %s | %s / %s | %d%s |\n", r.replicas, thousands(float64(r.users)),
			thousands(r.rrPerSecond), thousands(r.hashPerSecond), thousands(r.rrUsersPerProxy), thousands(r.hashPerProxy),
			size(r.rrBytes), size(r.hashBytes), min(r.slotsNeeded, 16384), over(r.slotsNeeded))
	}
}

func over(slots int) string {
	if slots > 16384 {
		return " (more than the maximum: add replicas)"
	}
	return ""
}

func thousands(x float64) string {
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func size(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive integers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fleet-model:", err)
	os.Exit(2)
}
