package e2e

// Issue 16, item 2: an intercepted write always finishes. A client that
// abandons, cancels (RFC 3909) or disconnects right after a write to an
// account must not leave its journal record prepared, nor the directory
// and Axigen disagreeing, nor later writes to the entry undelivered.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// finishRounds is how many times each way of leaving a write is tried
// (LDAPGATE_FINISH_ROUNDS; 300 by default).
func finishRounds(t *testing.T) int {
	if v := os.Getenv("LDAPGATE_FINISH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("LDAPGATE_FINISH_ROUNDS=%q: want a positive number", v)
		}
		return n
	}
	return 300
}

func modifyPhone(id int64, dn, phone string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationModifyRequest, nil, "modify")
	op.AppendChild(octets(dn))
	changes := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "changes")
	change := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "change")
	change.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(2), "replace"))
	attr := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attribute")
	attr.AppendChild(octets("telephoneNumber"))
	vals := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "values")
	vals.AppendChild(octets(phone))
	attr.AppendChild(vals)
	change.AppendChild(attr)
	changes.AppendChild(change)
	op.AppendChild(changes)
	return envelope(id, op)
}

func cancelRequest(id, target int64) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "1.3.6.1.1.8", "cancel"))
	value := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "cancelRequestValue")
	value.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, target, "cancelID"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 1, string(value.Bytes()), "value"))
	return envelope(id, op)
}

// TestRelayInterceptedWriteFinishes sends account modifies and, at once
// or after a random moment, abandons them, cancels them, unbinds or closes
// the connection, several clients at a time, each on its own account. Then
// every account's last write is made normally: Axigen must end up equal
// to the directory, with no record left prepared, and every write the
// directory made must have been journaled.
func TestRelayInterceptedWriteFinishes(t *testing.T) {
	const users = 8
	e := newMirrorEnv(t, mirrorOptions{Users: users, LogLevel: os.Getenv("LDAPGATE_FINISH_LOG")})
	rounds := finishRounds(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("LDAPGATE_FINISH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("%d rounds of each way to leave a write; seed %d (LDAPGATE_FINISH_SEED)", rounds, seed)

	ways := []string{"abandon", "cancel", "close", "unbind"}
	if v := os.Getenv("LDAPGATE_FINISH_WAYS"); v != "" {
		ways = strings.Split(v, ",")
	}
	var wg sync.WaitGroup
	errs := make(chan error, users)
	perUser := rounds*len(ways)/users + 1
	for w := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- finishWorker(e, userDN(slapd.UserUID(w)), w, perUser, rand.New(rand.NewPCG(seed, uint64(w))), ways)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.requireAlive()

	// A client that leaves with answers unread resets its connection, and
	// a request the gateway had not read by then is lost with it, as it
	// would be with the directory itself; one it had read is relayed and
	// settled, however late. Once the gateway has closed every worker's
	// session (it waits for their writes first), the directory's answers
	// it counted are the writes made: each one that succeeded is in the
	// journal, settled, and nothing is left prepared.
	sent := users * perUser
	var made int
	waitFor(t, 30*time.Second, "the workers' sessions closed and their writes settled", func() error {
		body := scrape(t, e.dataDir)
		if n := metric(body, "ldapgate_connections"); n != 0 {
			return fmt.Errorf("%v client sessions open", n)
		}
		made = int(metric(body, `ldapgate_operations_total{op="modify",result="success"}`))
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.Prepared != 0 {
			return fmt.Errorf("%d journal records still prepared", st.Prepared)
		}
		if n := st.Committed + st.Delivered + st.Dead; n != made {
			return fmt.Errorf("%d records journaled and settled, but the directory made %d writes", n, made)
		}
		return nil
	})
	t.Logf("%d of %d writes reached the directory before their client left", made, sent)
	if made < sent*3/4 {
		t.Fatalf("only %d of %d writes reached the directory: the test no longer tries what it means to", made, sent)
	}

	// Later writes to the same entries are delivered.
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer admin.Close()
	final := map[string]string{}
	for w := range users {
		uid := slapd.UserUID(w)
		final[uid] = fmt.Sprintf("+1 555 9%03d", w)
		mr := ldap.NewModifyRequest(userDN(uid), nil)
		mr.Replace("telephoneNumber", []string{final[uid]})
		if err := admin.Modify(mr); err != nil {
			t.Fatalf("final modify of %s: %v", uid, err)
		}
	}
	waitFor(t, 60*time.Second, "Axigen equal to the directory, nothing prepared", func() error {
		if err := e.checkMirrored(false); err != nil {
			return err
		}
		for uid, phone := range final {
			a, ok := e.sim.Account(mirrorDomain, e.accountName(uid))
			if !ok || a.Contact["phone"] != phone {
				return fmt.Errorf("account %s has phone %q in Axigen, want %q", uid, a.Contact["phone"], phone)
			}
		}
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.Prepared != 0 {
			return fmt.Errorf("%d journal records still prepared", st.Prepared)
		}
		if n := st.Committed + st.Delivered + st.Dead; n != made+users {
			return fmt.Errorf("%d records journaled and settled, want %d", n, made+users)
		}
		return nil
	})
}

// accountName is the Axigen account of a generated user.
func (e *mirrorEnv) accountName(uid string) string {
	en := e.directoryEntry(userDN(uid), "mail")
	for _, a := range e.sim.Accounts(mirrorDomain) {
		if en != nil && a.Name+"@"+mirrorDomain == en.GetAttributeValue("mail") {
			return a.Name
		}
	}
	return uid
}

// finishWorker makes n writes to dn, each left in one of ways.
func finishWorker(e *mirrorEnv, dn string, w, n int, rng *rand.Rand, ways []string) error {
	var c *rawConn
	var id int64
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := range n {
		if c == nil {
			conn, err := dialRawErr(e.gw.URL)
			if err != nil {
				return err
			}
			c, id = conn, 1
			if _, err := c.Write(bindRequest(id, mirrorAdminDN, e.dir.RootPW)); err != nil {
				return err
			}
			if err := c.await(id); err != nil {
				return fmt.Errorf("bind: %w", err)
			}
		}
		id++
		if _, err := c.Write(modifyPhone(id, dn, fmt.Sprintf("+1 555 %03d%04d", w, i))); err != nil {
			return fmt.Errorf("modify: %w", err)
		}
		if d := rng.IntN(3); d > 0 {
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond) // random timing, not synchronisation
		}
		switch way := ways[(i+w)%len(ways)]; way {
		case "abandon":
			id++
			if _, err := c.Write(abandonRequest(id, id-1)); err != nil {
				return fmt.Errorf("abandon: %w", err)
			}
		case "cancel":
			id++
			if _, err := c.Write(cancelRequest(id, id-1)); err != nil {
				return fmt.Errorf("cancel: %w", err)
			}
			if err := c.await(id); err != nil {
				return fmt.Errorf("cancel: %w", err)
			}
		case "close":
			c.Close()
			c = nil
		case "unbind":
			id++
			if _, err := c.Write(envelope(id, ber.Encode(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationUnbindRequest, nil, "unbind"))); err != nil {
				return fmt.Errorf("unbind: %w", err)
			}
			c.Close()
			c = nil
		}
	}
	return nil
}

func dialRawErr(url string) (*rawConn, error) {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "ldap://"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &rawConn{c}, nil
}

// await reads until the answer with message ID id (ignoring the answers
// to earlier, abandoned writes).
func (c *rawConn) await(id int64) error {
	for {
		m, err := c.next(30 * time.Second)
		if err != nil {
			return err
		}
		if m.ID == 0 {
			return fmt.Errorf("disconnected by the gateway: %s", m)
		}
		if m.ID == id {
			return nil
		}
	}
}
