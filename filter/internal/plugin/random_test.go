package plugin

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// TestRandomTraffic drives the filter with random interleavings of what Envoy and the IdP can
// do — requests of several users, IdP answers of every kind in any order, clients going away,
// upstream 401s, time passing — and checks after every step what must always hold:
//   - a request is never held past its deadline (timeoutMs after it arrived) plus one tick;
//   - a request that goes upstream carries its own user's exchanged token or the
//     service-account token, never another user's;
//   - the held-requests gauge equals the number of requests actually waiting;
//   - nothing panics, and no log line contains a token or the secret (checked by the harness).
//
// Go runner only: it moves the clock. Seeds are fixed so a failure reproduces.
func TestRandomTraffic(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		for _, strict := range []bool{false, true} {
			name := "seed" + strconv.FormatUint(seed, 10)
			if strict {
				name += "/strict"
			}
			t.Run(name, func(t *testing.T) { runRandomTraffic(t, seed, strict, 1500) })
		}
	}
}

type trafficRequest struct {
	user      int // -1: no user token
	arrivedMs int64
	cancelled bool
	settled   bool
}

func runRandomTraffic(t *testing.T, seed uint64, strict bool, steps int) {
	const timeoutMs = 1000
	clock := fakeClock(t)
	rng := rand.New(rand.NewPCG(seed, seed*7919))
	cfg := exchangeOn + `,"timeoutMs":1000`
	if strict {
		cfg += `,"fallbackToServiceAccount":false`
	}
	h := start(t, "go", pluginConfig(cfg))

	users := []string{"U0.a.sig", "U1.b.sig", "U2.c.sig", "U3.d.sig"}
	userOf := map[string]int{} // exchanged or service token → user index (-1 service account)
	requests := map[uint32]*trafficRequest{}
	var answered int // callouts answered so far; the emulator reuses ids, so answer newest first
	issued := 0

	pending := func() []callout {
		all := h.host.GetCalloutAttributesFromContext(1)
		var out []callout
		for _, a := range all {
			out = append(out, callout{HttpCalloutAttribute: a})
		}
		return out
	}
	var open []callout // dispatched, not yet answered, in dispatch order
	seen := 0
	refresh := func() {
		all := pending()
		for _, c := range all[seen:] {
			// The emulator numbers callouts by how many are pending, so a new one can take the id
			// of one still open; the older one's answer is then lost, as a dropped callback would
			// be in Envoy. The filter's deadlines must cope.
			for i, o := range open {
				if o.CalloutID == c.CalloutID {
					open = append(open[:i], open[i+1:]...)
					break
				}
			}
			open = append(open, c)
		}
		seen = len(all)
	}

	answerNewest := func() {
		refresh()
		if len(open) == 0 {
			return
		}
		c := open[len(open)-1]
		open = open[:len(open)-1]
		answered++
		body := string(c.Body)
		isService := strings.Contains(body, "grant_type=client_credentials")
		switch k := rng.IntN(10); {
		case k < 6: // success
			issued++
			var tok string
			if isService {
				tok = "SA" + strconv.Itoa(issued) + ".x.y"
				userOf[tok] = -1
			} else {
				u := -2
				for i, ut := range users {
					if strings.Contains(body, "subject_token="+strings.ReplaceAll(ut, ".", ".")) {
						u = i
					}
				}
				if u < 0 {
					t.Fatalf("exchange for an unknown subject: %s", body)
				}
				tok = "EX" + strconv.Itoa(u) + "-" + strconv.Itoa(issued) + ".x.y"
				userOf[tok] = u
			}
			life := []int{300, 31, 10}[rng.IntN(3)] // some with no time left after the 30 s skew
			h.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "200"}}, nil, []byte(tokenBody(tok, life)))
		case k < 7:
			h.host.CallOnHttpCallResponse(c.CalloutID, nil, nil, nil) // reset
		case k < 8:
			h.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "504"}}, nil, []byte("upstream request timeout"))
		case k < 9:
			h.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "400"}}, nil, []byte(`{"error":"invalid_grant"}`))
		default:
			h.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", "200"}}, nil, []byte("<html>"))
		}
	}

	check := func(afterTick bool) {
		t.Helper()
		now := nowMs()
		waiting := 0
		for id, r := range requests {
			if r.cancelled || r.settled {
				continue
			}
			lr := h.host.GetSentLocalResponse(id)
			action := h.host.GetCurrentHttpStreamAction(id)
			switch {
			case lr != nil:
				r.settled = true
			case action == types.ActionContinue:
				r.settled = true
				auth, _ := h.requestHeader(id, "authorization")
				tok := strings.TrimPrefix(auth, "Bearer ")
				owner, known := userOf[tok]
				if !known {
					t.Fatalf("request %d went upstream with an unknown token %q", id, tok)
				}
				if owner != -1 && owner != r.user {
					t.Fatalf("request %d of user %d went upstream with user %d's token", id, r.user, owner)
				}
				if owner == -1 && strict && r.user >= 0 {
					t.Fatalf("strict mode sent user %d's request with the service-account token", r.user)
				}
			default:
				waiting++
				if afterTick && now-r.arrivedMs > timeoutMs+tickMs {
					t.Fatalf("request %d held %d ms, past timeoutMs %d plus a tick", id, now-r.arrivedMs, timeoutMs)
				}
			}
		}
		if got := h.gaugeValue(metricHeld); got != uint64(waiting) {
			t.Fatalf("%s = %d, but %d requests wait", metricHeld, got, waiting)
		}
	}

	for step := 0; step < steps; step++ {
		switch k := rng.IntN(100); {
		case k < 40: // a request
			u := rng.IntN(len(users)+1) - 1
			var id uint32
			if u < 0 {
				id, _ = h.request()
			} else {
				id, _ = h.userRequest(users[u])
			}
			requests[id] = &trafficRequest{user: u, arrivedMs: nowMs()}
		case k < 65:
			answerNewest()
		case k < 72: // a client goes away
			for id, r := range requests {
				if !r.settled && !r.cancelled {
					h.host.CompleteHttpContext(id)
					r.cancelled = true
					break
				}
			}
		case k < 77: // the upstream refuses a token it got
			for id, r := range requests {
				if r.settled && !r.cancelled && h.host.GetSentLocalResponse(id) == nil {
					h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
					h.host.CompleteHttpContext(id)
					r.cancelled = true
					break
				}
			}
		default: // time passes
			clock.advance(int64(rng.IntN(300)))
			h.host.Tick()
			check(true)
			continue
		}
		check(false)
	}
	// Drain: answer everything, let time run out, and every request must be settled.
	for i := 0; i < 200 && len(open) > 0; i++ {
		answerNewest()
	}
	clock.advance(timeoutMs + tickMs)
	h.host.Tick()
	check(true)
	for id, r := range requests {
		if !r.cancelled && !r.settled {
			t.Fatalf("request %d never settled", id)
		}
	}
}
