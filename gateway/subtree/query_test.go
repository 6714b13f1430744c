package subtree

import (
	"sync/atomic"
	"testing"

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
