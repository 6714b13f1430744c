package axigensim

import (
	"bufio"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// dialAddr is dial for a listener added with Listen.
func dialAddr(t *testing.T, addr string) *raw {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &raw{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// TestLabelledListenersShareStateAndLogCommands: two labelled listeners
// serve the same accounts; the command log says which listener sent each
// command, masks passwords, and numbers the changes in the order the
// state took them.
func TestLabelledListenersShareStateAndLogCommands(t *testing.T) {
	s := start(t, Options{})
	addrA, err := s.Listen("n1")
	if err != nil {
		t.Fatal(err)
	}
	addrB, err := s.Listen("n2")
	if err != nil {
		t.Fatal(err)
	}
	a, b := dialAddr(t, addrA), dialAddr(t, addrB)
	a.login()
	b.login()
	a.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	a.do(`ADD Account name "john" password "first-pw"`, "<domain-account#> ")
	a.do(`COMMIT`, "<domain#> ")
	b.do(`UPDATE Domain name "example.com"`, "<domain#> ")
	b.do(`UPDATE Account name "john"`, "<domain-account#> ")
	b.do(`SET password "second-pw"`, "<domain-account#> ")
	b.do(`COMMIT`, "<domain#> ")
	b.do(`REMOVE Account name "nobody"`, "<domain#> ")
	b.do(`REMOVE Account name "john"`, "<domain#> ")

	// The two sessions were accepted in either order.
	var labels []string
	for _, tr := range s.Transcripts() {
		labels = append(labels, tr.Label)
	}
	if slices.Sort(labels); !slices.Equal(labels, []string{"n1", "n2"}) {
		t.Fatalf("transcripts' labels: %q", labels)
	}
	var changes []*Change
	for _, c := range s.Commands() {
		if strings.Contains(c.Line, "-pw") {
			t.Errorf("command log shows a password: %+v", c)
		}
		if c.Change != nil {
			changes = append(changes, c.Change)
			if c.Label != map[bool]string{true: "n1", false: "n2"}[len(changes) == 1] {
				t.Errorf("change %d logged from %q", len(changes), c.Label)
			}
		}
		if c.Line == `REMOVE Account name "nobody"` && (c.OK || c.Change != nil) {
			t.Errorf("a failed remove is logged as %+v", c)
		}
	}
	if len(changes) != 3 {
		t.Fatalf("%d changes logged, want 3", len(changes))
	}
	if c := changes[0]; c.Kind != "account" || c.Name != "john" || c.Account.Password != "first-pw" || c.Seq != 1 {
		t.Errorf("first change %+v", c)
	}
	if c := changes[1]; c.Account == nil || c.Account.Password != "second-pw" || c.Seq != 2 {
		t.Errorf("second change %+v", c)
	}
	if c := changes[2]; !c.Removed || c.Name != "john" || c.Seq != 3 {
		t.Errorf("third change %+v", c)
	}

	// SetDown cuts and re-opens the labelled listeners too.
	if err := s.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if !a.eof() {
		t.Error("a session of a labelled listener survived SetDown")
	}
	if err := s.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c := dialAddr(t, addrA)
	c.login()
	if tr := s.Transcripts(); tr[len(tr)-1].Label != "n1" {
		t.Errorf("after SetDown(false), the listener's sessions are labelled %q", tr[len(tr)-1].Label)
	}
}
