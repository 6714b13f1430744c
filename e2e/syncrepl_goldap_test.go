package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// syncEvent is one thing a syncrepl consumer saw: an entry with its sync
// state, an intermediate Sync Info message, or the final result.
type syncEvent struct {
	Kind   string // "entry", "info", "done"
	DN     string
	State  ldap.ControlSyncStateState
	UUID   string
	Cookie string // hex
	Attrs  string
}

func (e syncEvent) String() string {
	return fmt.Sprintf("%s %s state=%d uuid=%s cookie=%s %s", e.Kind, e.DN, e.State, e.UUID, e.Cookie, e.Attrs)
}

// syncConsumer runs go-ldap's Syncrepl on its own connection, the way
// Axigen's LDAP connector follows the directory, and records what it sees.
type syncConsumer struct {
	mu     sync.Mutex
	events []syncEvent
	err    error
	done   chan struct{}
	conn   *ldap.Conn
}

func startSyncConsumer(t testing.TB, ctx context.Context, url, dn, pw string, mode ldap.ControlSyncRequestMode, cookie []byte) *syncConsumer {
	t.Helper()
	c, err := ldap.DialURL(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if err := c.Bind(dn, pw); err != nil {
		c.Close()
		t.Fatalf("bind %s: %v", dn, err)
	}
	sc := &syncConsumer{done: make(chan struct{}), conn: c}
	t.Cleanup(func() { c.Close(); <-sc.done })
	req := ldap.NewSearchRequest(suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"uid", "mail", "telephoneNumber", "description"}, nil)
	resp := c.Syncrepl(ctx, req, 64, mode, cookie, false)
	go func() {
		defer close(sc.done)
		for resp.Next() {
			var ev syncEvent
			if e := resp.Entry(); e != nil {
				ev = syncEvent{Kind: "entry", DN: strings.ToLower(e.DN)}
				var parts []string
				for _, a := range e.Attributes {
					parts = append(parts, a.Name+"="+strings.Join(a.Values, ","))
				}
				ev.Attrs = strings.Join(parts, ";")
			} else {
				ev.Kind = "done"
			}
			for _, ctl := range resp.Controls() {
				switch ctl := ctl.(type) {
				case *ldap.ControlSyncState:
					ev.State, ev.UUID, ev.Cookie = ctl.State, ctl.EntryUUID.String(), hex.EncodeToString(ctl.Cookie)
				case *ldap.ControlSyncInfo:
					ev.Kind = "info"
					switch {
					case ctl.NewCookie != nil:
						ev.Cookie = hex.EncodeToString(ctl.NewCookie.Cookie)
					case ctl.RefreshDelete != nil:
						ev.Cookie = hex.EncodeToString(ctl.RefreshDelete.Cookie)
					case ctl.RefreshPresent != nil:
						ev.Cookie = hex.EncodeToString(ctl.RefreshPresent.Cookie)
					}
				case *ldap.ControlSyncDone:
					ev.Cookie = hex.EncodeToString(ctl.Cookie)
				}
			}
			sc.mu.Lock()
			sc.events = append(sc.events, ev)
			sc.mu.Unlock()
		}
		sc.mu.Lock()
		sc.err = resp.Err()
		sc.mu.Unlock()
	}()
	return sc
}

func (sc *syncConsumer) snapshot() []syncEvent {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]syncEvent(nil), sc.events...)
}

// waitSeen waits until the consumer has seen an entry event for dn whose
// attributes contain want.
func (sc *syncConsumer) waitSeen(t testing.TB, dn, want string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("sync event for %s with %q", dn, want), func() error {
		for _, ev := range sc.snapshot() {
			if ev.Kind == "entry" && ev.DN == strings.ToLower(dn) && strings.Contains(ev.Attrs, want) {
				return nil
			}
		}
		select {
		case <-sc.done:
			return fmt.Errorf("the sync search ended: %v", sc.err)
		default:
		}
		return fmt.Errorf("%d events so far", len(sc.snapshot()))
	})
}

// lastCookie is the newest cookie the consumer was given.
func (sc *syncConsumer) lastCookie() []byte {
	evs := sc.snapshot()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Cookie != "" {
			b, _ := hex.DecodeString(evs[i].Cookie)
			return b
		}
	}
	return nil
}

// A go-ldap syncrepl consumer through the mirroring gateway sees exactly
// what one connected to slapd directly sees: every change made by other
// clients (the intercepted and mirrored ones included), with the same
// entryUUIDs, sync states and cookies, byte for byte.
func TestSyncreplGoLDAPConsumerSeesWhatDirectSees(t *testing.T) {
	env := newMirrorEnv(t, mirrorOptions{Users: 20, Groups: 2, LogLevel: "info"})
	ctx := t.Context()
	direct := startSyncConsumer(t, ctx, env.dir.URL, mirrorAdminDN, env.dir.RootPW, ldap.SyncRequestModeRefreshAndPersist, nil)
	via := startSyncConsumer(t, ctx, env.gw.URL, mirrorAdminDN, env.dir.RootPW, ldap.SyncRequestModeRefreshAndPersist, nil)
	for _, sc := range []*syncConsumer{direct, via} {
		sc.waitSeen(t, userDN("user00019"), "uid=user00019")
	}

	// Other clients write: the admin through the gateway (mirrored
	// account and group writes, a rename, a delete), and alice on her own.
	admin := bindConn(t, env.gw.URL, mirrorAdminDN, env.dir.RootPW)
	writeBatch(t, admin, "7")
	alice := bindConn(t, env.gw.URL, userDN("alice"), "alice-pw")
	if err := modifyDescription(alice, userDN("alice"), "written by alice"); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []*syncConsumer{direct, via} {
		sc.waitSeen(t, userDN("alice"), "description=written by alice")
	}
	d, v := direct.snapshot(), via.snapshot()
	if len(d) != len(v) {
		t.Fatalf("direct saw %d events, through the gateway %d:\n%s\n---\n%s", len(d), len(v), joinEvents(d), joinEvents(v))
	}
	for i := range d {
		if d[i] != v[i] {
			t.Fatalf("event %d differs:\n  direct:  %v\n  gateway: %v", i, d[i], v[i])
		}
	}
	var uuids, cookies int
	for _, ev := range v {
		if ev.UUID != "" && ev.UUID != "00000000-0000-0000-0000-000000000000" {
			uuids++
		}
		if ev.Cookie != "" {
			cookies++
		}
	}
	if uuids < 25 || cookies == 0 {
		t.Errorf("%d events with an entryUUID, %d with a cookie", uuids, cookies)
	}
	env.waitMirrored(20*time.Second, false)

	// Resume from the last cookie through the gateway (refreshOnly, as a
	// polling connector does): only what changed since comes back.
	cookie := via.lastCookie()
	if cookie == nil {
		t.Fatal("no cookie seen")
	}
	if err := modifyDescription(admin, userDN("bob"), "after the cookie"); err != nil {
		t.Fatal(err)
	}
	resumed := startSyncConsumer(t, ctx, env.gw.URL, mirrorAdminDN, env.dir.RootPW, ldap.SyncRequestModeRefreshOnly, cookie)
	<-resumed.done
	if resumed.err != nil {
		t.Fatalf("resumed refresh: %v", resumed.err)
	}
	var entries []syncEvent
	for _, ev := range resumed.snapshot() {
		if ev.Kind == "entry" {
			entries = append(entries, ev)
		}
	}
	if len(entries) != 1 || entries[0].DN != strings.ToLower(userDN("bob")) || !strings.Contains(entries[0].Attrs, "after the cookie") {
		t.Errorf("resume from the cookie returned:\n%s", joinEvents(entries))
	}
}

func joinEvents(evs []syncEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		b.WriteString(ev.String())
		b.WriteByte('\n')
	}
	return b.String()
}
