package subtree

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jimlambrt/gldap"
)

// TestQueryStopsWhenAbandoned proves that a search whose stop flag is set
// (Conn.Answer on an Abandon) sends nothing more and no final result.
func TestQueryStopsWhenAbandoned(t *testing.T) {
	var list []*entry
	for _, dn := range []string{"a", "b", "c", "d"} {
		e := &entry{dn: dn}
		e.add("objectClass", "top")
		list = append(list, e)
	}
	filter, err := compileFilter("(objectClass=*)")
	if err != nil {
		t.Fatal(err)
	}
	stop := new(atomic.Bool)
	sent := 0
	res := query{scope: int(gldap.SingleLevel), filter: filter, stop: stop}.run(sliceSource(list), func(*entry) bool {
		sent++
		if sent == 2 {
			stop.Store(true)
		}
		return true
	})
	if !res.gone || sent != 2 {
		t.Fatalf("abandoned search: sent %d, result %+v; want 2 sent and no final result", sent, res)
	}
}

// TestStopSearchNamesOneSearch proves that an Abandon stops the search it
// names on its own connection only.
func TestStopSearchNamesOneSearch(t *testing.T) {
	s := &Server{running: map[searchKey]*atomic.Bool{}}
	mine, forget := s.startSearch(searchKey{conn: 1, msg: 5})
	other, _ := s.startSearch(searchKey{conn: 2, msg: 5})
	s.stopSearch(searchKey{conn: 1, msg: 5})
	if !mine.Load() || other.Load() {
		t.Fatalf("stop flags: named %v, other connection's %v", mine.Load(), other.Load())
	}
	forget()
	if _, ok := s.running[searchKey{conn: 1, msg: 5}]; ok {
		t.Fatal("a finished search is still registered")
	}
}

// TestQueryStopsAtTheDeadline proves that a walk still running at its
// deadline sends nothing more and ends with timeLimitExceeded and the
// deadline's diagnostic: the source turns slow after three entries (it
// returns the fourth only once the deadline has passed).
func TestQueryStopsAtTheDeadline(t *testing.T) {
	filter, err := compileFilter("(objectClass=*)")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{SearchTimeLimit: 50 * time.Millisecond}}
	deadline, msg := s.deadline(time.Now(), 0)
	calls := 0
	src := func(uint64) func() (*entry, uint64, bool, error) {
		return func() (*entry, uint64, bool, error) {
			calls++
			if calls == 4 {
				for !time.Now().After(deadline) {
					runtime.Gosched()
				}
			}
			e := &entry{dn: "e"}
			e.add("objectClass", "top")
			return e, uint64(calls), true, nil
		}
	}
	sent := 0
	res := query{scope: int(gldap.SingleLevel), filter: filter, deadline: deadline, timeLimitMsg: msg}.run(src, func(*entry) bool {
		sent++
		return true
	})
	if res.code != gldap.ResultTimeLimitExceeded || sent != 4 || !strings.Contains(res.msg, "time limit of 50ms") {
		t.Fatalf("walk past its deadline: sent %d, result %+v; want 4 sent, then timeLimitExceeded naming the cap", sent, res)
	}
}

// TestDeadlineTakesTheEarlierLimit: the client's time limit and the
// server's cap, whichever ends first; the diagnostic names the cap only
// when the cap ends the search; a negative cap is none.
func TestDeadlineTakesTheEarlierLimit(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		limit       time.Duration
		client      int64
		want        time.Duration // 0: no deadline
		byServerCap bool
	}{
		{"no client limit: the cap", time.Minute, 0, time.Minute, true},
		{"client's shorter", time.Minute, 5, 5 * time.Second, false},
		{"cap shorter", time.Minute, 3600, time.Minute, true},
		{"no cap, no client limit", -1, 0, 0, false},
		{"no cap, client's", -1, 7, 7 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{cfg: Config{SearchTimeLimit: tt.limit}}
			at, msg := s.deadline(now, tt.client)
			switch {
			case tt.want == 0 && !at.IsZero(), tt.want != 0 && !at.Equal(now.Add(tt.want)):
				t.Errorf("deadline %v after now, want %v", at.Sub(now), tt.want)
			case tt.byServerCap != (msg != ""):
				t.Errorf("diagnostic %q; want one naming the cap: %v", msg, tt.byServerCap)
			}
		})
	}
}
