package e2e

import (
	"strings"
	"testing"
	"time"
)

// A client pipelining writes to one entry on one connection (a modify, a
// rename, a modify of the renamed entry, a rename back), all in one TCP
// segment. The gateway relays each write as the client sends it, and
// sends a write on to the directory only with the next when more are
// buffered; a rename waits for the writes of its entry on their way (and
// they for it), so the write it waits for must be sent first, or the
// session waits on itself until the wait gives up (busy). Each answer
// comes promptly, each write succeeds, and Axigen ends with the final
// name and phone.
func TestRenamePipelinedWithWritesOfItsEntry(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	c := e.pipelineOnPipe(t)
	for round := range 3 {
		var burst []byte
		burst = append(burst, modifyPhone(2, userDN("pipe"), "+1 555 0100")...)
		burst = append(burst, modDNRequest(3, userDN("pipe"), "uid=pipex", "")...)
		burst = append(burst, modifyPhone(4, userDN("pipex"), "+1 555 0101")...)
		burst = append(burst, modDNRequest(5, userDN("pipex"), "uid=pipe", "")...)
		burst = append(burst, modifyPhone(6, userDN("pipe"), "+1 555 0102")...)
		start := time.Now()
		c.send(t, burst)
		for id := int64(2); id <= 6; id++ {
			m, err := c.next(8 * time.Second)
			if err != nil {
				t.Fatalf("round %d: waiting for the answer to %d: %v (after %v)", round, id, err, time.Since(start))
			}
			if m.ID != id || m.ResultCode != 0 {
				t.Fatalf("round %d: answer %v, want %d: success", round, m, id)
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("round %d: five pipelined writes answered in %v: a write waited on its own session", round, d)
		}
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	var names []string
	for _, a := range e.sim.Accounts(mirrorDomain) {
		if strings.HasPrefix(a.Name, "pipe") {
			names = append(names, a.Name)
		}
	}
	if len(names) != 1 || names[0] != "pipe" {
		t.Errorf("Axigen's accounts named pipe*: %v, want [pipe]", names)
	}
}

// pipelineOnPipe adds the account pipe (mirrored), and returns a raw
// connection to the gateway bound as the admin, for a test to pipeline
// writes on.
func (e *mirrorEnv) pipelineOnPipe(t *testing.T) *rawConn {
	t.Helper()
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := admin.Add(accountAdd(userDN("pipe"), "pipe")); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20*time.Second, false)
	c := dialRaw(t, e.gw.URL)
	c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
	c.expectResult(t, 1, 0)
	return c
}
