package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

func openJournal(t *testing.T) *store.Journal {
	t.Helper()
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{KeyFile: filepath.Join(dir, "key"), NoSync: true, HousekeepingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestMetricsCountOperationsAndJournal(t *testing.T) {
	j := openJournal(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		seq, err := j.Prepare(ctx, &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: "uid=a,ou=people,dc=example,dc=com", Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if err := j.Commit(ctx, seq, ""); err != nil {
			t.Fatal(err)
		}
	}
	s := New(Config{Journal: j})
	s.SetSources(func() gateway.Stats { return gateway.Stats{Connections: 7, Accepted: 9} }, nil)
	s.OperationDone("search", 0, 2*time.Millisecond)
	s.OperationDone("search", 0, time.Millisecond)
	s.OperationDone("search", 32, time.Millisecond)
	s.OperationDone("modify", 50, 0)
	s.DeliveryDone("account", nil)

	code, body := get(t, s, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`ldapgate_operations_total{op="search",result="success"} 2`,
		`ldapgate_operations_total{op="search",result="no_such_object"} 1`,
		`ldapgate_operations_total{op="modify",result="insufficient_access_rights"} 1`,
		`ldapgate_operation_duration_seconds_count{op="search"} 3`,
		`ldapgate_connections 7`,
		`ldapgate_connections_accepted_total 9`,
		`ldapgate_journal_backlog 3`,
		`ldapgate_journal_records{state="committed"} 3`,
		`ldapgate_delivery_attempts_total{kind="account",outcome="delivered"} 1`,
		`ldapgate_dead_letters 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "uid=a") {
		t.Error("a DN appears in the metrics")
	}
}

func TestJournalEndpoints(t *testing.T) {
	j := openJournal(t)
	ctx := context.Background()
	seq, err := j.Prepare(ctx, &store.Record{Kind: store.KindAccount, Op: store.OpPassword, DN: "uid=a,ou=people,dc=example,dc=com", Secret: []byte("s3cret-value"), Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Commit(ctx, seq, ""); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Journal: j})

	code, body := get(t, s, "GET", "/journal/stats")
	var st store.Stats
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Backlog != 1 {
		t.Fatalf("stats: %d %s", code, body)
	}
	code, body = get(t, s, "GET", "/journal/records?state=committed")
	var recs []store.Record
	if code != 200 || json.Unmarshal([]byte(body), &recs) != nil || len(recs) != 1 || recs[0].Seq != seq {
		t.Fatalf("list: %d %s", code, body)
	}
	if strings.Contains(body, "s3cret-value") {
		t.Fatal("the password is served")
	}
	if code, _ := get(t, s, "GET", "/journal/records?state=bogus"); code != 400 {
		t.Errorf("bad state: %d, want 400", code)
	}
	if code, _ := get(t, s, "GET", "/journal/records/999"); code != 404 {
		t.Errorf("missing record: %d, want 404", code)
	}
	if code, body := get(t, s, "POST", "/journal/records/"+itoa(seq)+"/drop"); code != 200 {
		t.Fatalf("drop: %d %s", code, body)
	}
	if _, err := j.Get(seq); err == nil {
		t.Fatal("the dropped record is still there")
	}
}

func TestReadiness(t *testing.T) {
	s := New(Config{Journal: openJournal(t)})
	up := gateway.NewUpstreamSet(nil, time.Second, 1<<20, nil)
	s.SetSources(nil, up)
	if code, body := get(t, s, "GET", "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no upstream") {
		t.Fatalf("readyz with no upstream: %d %s", code, body)
	}
	if code, _ := get(t, s, "GET", "/healthz"); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func BenchmarkOperationDone(b *testing.B) {
	s := New(Config{})
	b.ReportAllocs()
	for b.Loop() {
		s.OperationDone("search", 0, time.Millisecond)
	}
}

func TestNetworkHandlerServesOnlyWhatIsSafe(t *testing.T) {
	s := New(Config{Journal: openJournal(t)})
	h := s.Network()
	for path, want := range map[string]int{
		"/metrics": 200, "/healthz": 200, "/readyz": 200,
		"/journal/stats": 403, "/journal/records": 403, "/debug/pprof/": 403,
	} {
		if code, _ := get(t, h, "GET", path); code != want {
			t.Errorf("GET %s over the network: %d, want %d", path, code, want)
		}
	}
	if code, _ := get(t, h, "POST", "/journal/records/1/drop"); code != 403 {
		t.Errorf("a drop over the network: %d, want 403", code)
	}
}
