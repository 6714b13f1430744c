package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/store"
)

// The gateway's RPC runs on connections of kind 'P' of the cluster port.
// Both directions carry frames: a header (the payload's length, uint32;
// the request's id, uint64; the request's kind, or the answer's status:
// 0 for success, 1 for an error, see appendError) and the payload. A
// connection carries many requests at once; answers come back in any
// order, matched by id.
const (
	rpcPropose      byte = 1 // forwarded commands (see encodeForward)
	rpcPeer         byte = 2 // this node's own view (PeerStatus, JSON)
	rpcStatus       byte = 3 // Node.Status of the node asked (JSON)
	rpcAddVoter     byte = 4 // membershipRequest (JSON)
	rpcRemoveServer byte = 5 // membershipRequest (JSON)
)

const (
	frameHeader = 4 + 8 + 1
	// maxFrame bounds a frame: a forwarded proposal is at most
	// store.MaxEntryBytes of commands (refused before it is sent
	// otherwise), and its encoding is below its size hint.
	maxFrame = 2*store.MaxEntryBytes + 64<<10
	// rpcWriteTimeout bounds the write of one frame.
	rpcWriteTimeout = 10 * time.Second
	// maxServing bounds the requests of one connection served at once:
	// past it the server reads no more from the connection.
	maxServing = 256
)

type frame struct {
	id      uint64
	kind    byte // a request's kind, an answer's status
	payload []byte
}

func appendFrame(buf []byte, f frame) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(f.payload)))
	buf = binary.BigEndian.AppendUint64(buf, f.id)
	buf = append(buf, f.kind)
	return append(buf, f.payload...)
}

// frameWriter writes the frames of one connection. Frames queued while
// another goroutine writes go out together in the next write: one system
// call for the answers of one log entry, or for the proposals their
// callers send next, instead of one each (BenchmarkClusterRecords with
// one record per proposal spent a tenth of its CPU time in the RPC's
// reads and writes).
type frameWriter struct {
	c    net.Conn
	mu   sync.Mutex
	cond sync.Cond // signalled when a write ends
	// queue holds the frames for write number writes+1; spare is a
	// written buffer, for the next queue.
	queue, spare []byte
	writing      bool   // a write is under way, without mu
	writes       uint64 // writes started
	written      uint64 // the last write done whole
	// failed is the number of the write that failed, err its error,
	// sent the bytes it wrote: the connection is done.
	failed uint64
	sent   int
	err    error
}

func newFrameWriter(c net.Conn) *frameWriter {
	w := &frameWriter{c: c}
	w.cond.L = &w.mu
	return w
}

// write sends frame f and returns once it left whole; an error means it
// did not (f was too large, or the connection failed before its last
// byte: the other end cannot have acted on it). A failed write fails the
// frames after it too.
func (w *frameWriter) write(f frame) error {
	if len(f.payload) > maxFrame {
		return fmt.Errorf("a frame of %d bytes is over the limit (%d): %w", len(f.payload), maxFrame, store.ErrTooLarge)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.queue = appendFrame(w.queue, f)
	mine, end := w.writes+1, len(w.queue)
	for {
		switch {
		case w.written >= mine:
			return nil
		case w.err != nil && w.failed < mine:
			return w.err
		case w.err != nil:
			if end <= w.sent {
				return nil // before the cut: sent whole
			}
			return w.err
		case !w.writing:
			w.flush()
		default:
			w.cond.Wait()
		}
	}
}

// flush writes the queued frames, with mu held (released meanwhile).
func (w *frameWriter) flush() {
	// Let the goroutines woken with this one (the answers of one log
	// entry) queue their frames first: they go out in this write.
	w.writing = true
	w.mu.Unlock()
	runtime.Gosched()
	w.mu.Lock()
	buf := w.queue
	w.queue = w.spare[:0]
	w.writes++
	n := w.writes
	w.writing = true
	w.mu.Unlock()
	w.c.SetWriteDeadline(time.Now().Add(rpcWriteTimeout))
	sent, err := w.c.Write(buf)
	// The frames may hold plaintext secrets (forwarded Prepares).
	clear(buf)
	w.mu.Lock()
	w.writing = false
	if cap(buf) <= 64<<10 {
		w.spare = buf[:0]
	}
	if err != nil {
		// Whatever follows would be read out of step: the connection
		// is done, for its reader too.
		w.c.Close()
		w.failed, w.sent, w.err = n, sent, err
		clear(w.queue)
		w.queue = nil
	} else {
		w.written = n
	}
	w.cond.Broadcast()
}

// readFrame reads the next frame from br, which reads c.
func readFrame(br *bufio.Reader, c net.Conn) (frame, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > maxFrame {
		return frame{}, fmt.Errorf("a frame of %d bytes is over the limit (%d)", n, maxFrame)
	}
	f := frame{id: binary.BigEndian.Uint64(h[4:]), kind: h[12]}
	// The writer sends a frame in one write, within rpcWriteTimeout: a
	// frame begun must end as soon, or the connection is given up. A
	// frame already read whole needs no deadline.
	if br.Buffered() < int(n) {
		c.SetReadDeadline(time.Now().Add(rpcWriteTimeout))
		defer c.SetReadDeadline(time.Time{})
	}
	var err error
	if f.payload, err = readPayload(br, int(n)); err != nil {
		return frame{}, err
	}
	return f, nil
}

// rpcReadBuffer is the read buffer of an RPC connection: a burst of
// frames (the answers of one log entry) is read in one system call.
const rpcReadBuffer = 32 << 10

// readPayload reads n bytes into a buffer that grows as they arrive, not
// to the length the header claims: a peer that announces large frames and
// sends nothing holds no memory for them. A buffer outgrown is cleared
// (a forwarded Prepare holds a plaintext secret).
func readPayload(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, 64<<10))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			next := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(next, buf)
			clear(buf)
			buf = next
		}
		m, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < n {
			clear(buf)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// errorFrame is an error answer.
func errorFrame(id uint64, err error) frame {
	return frame{id: id, kind: 1, payload: appendError(nil, err)}
}

// answerOf is the payload of answer f, or its error.
func answerOf(f frame) ([]byte, error) {
	if f.kind == 0 {
		return f.payload, nil
	}
	r := reader{b: f.payload}
	err := r.error()
	if r.err != nil || err == nil {
		return nil, fmt.Errorf("a malformed error answer (status %d)", f.kind)
	}
	return nil, err
}

// rpcConn is the calling end of an RPC connection.
type rpcConn struct {
	c net.Conn
	w *frameWriter

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan frame
	err     error         // why the connection ended
	done    chan struct{} // closed when it ended
}

func newRPCConn(c net.Conn) *rpcConn {
	rc := &rpcConn{c: c, w: newFrameWriter(c), pending: map[uint64]chan frame{}, done: make(chan struct{})}
	go rc.read()
	return rc
}

func (rc *rpcConn) read() {
	br := bufio.NewReaderSize(rc.c, rpcReadBuffer)
	for {
		f, err := readFrame(br, rc.c)
		if err != nil {
			rc.fail(err)
			return
		}
		rc.mu.Lock()
		ch := rc.pending[f.id]
		delete(rc.pending, f.id)
		rc.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	}
}

// fail ends the connection: every call waiting fails.
func (rc *rpcConn) fail(err error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.err != nil {
		return
	}
	rc.err = err
	rc.c.Close()
	close(rc.done)
}

func (rc *rpcConn) close() { rc.fail(net.ErrClosed) }

// broken reports whether the connection has ended.
func (rc *rpcConn) broken() bool {
	select {
	case <-rc.done:
		return true
	default:
		return false
	}
}

// errConnLost: the connection ended after the request was sent, before
// its answer came.
var errConnLost = errors.New("the connection to the node was lost before its answer")

// call sends a request and waits for its answer. An error wrapping
// errNotSent means the request never left whole; after it left, the
// answer may not come: ctx ended (ctx.Err()) or the connection ended
// (errConnLost). An error answer is returned re-created (errorOf).
func (rc *rpcConn) call(ctx context.Context, kind byte, payload []byte) ([]byte, error) {
	ch := make(chan frame, 1)
	rc.mu.Lock()
	if rc.err != nil {
		rc.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", errNotSent, rc.err)
	}
	rc.next++
	id := rc.next
	rc.pending[id] = ch
	rc.mu.Unlock()
	forget := func() {
		rc.mu.Lock()
		delete(rc.pending, id)
		rc.mu.Unlock()
	}

	if err := rc.w.write(frame{id: id, kind: kind, payload: payload}); err != nil {
		forget()
		if !errors.Is(err, store.ErrTooLarge) {
			// A frame cut short is never acted on, but the frames after
			// it would be read out of step: the connection is done.
			rc.fail(err)
		}
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	select {
	case f := <-ch:
		return answerOf(f)
	case <-rc.done:
		forget()
		select {
		case f := <-ch: // the answer came just before the end
			return answerOf(f)
		default:
		}
		return nil, fmt.Errorf("%w (%v)", errConnLost, rc.err)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// peerConns keeps one RPC connection to each node this one calls.
type peerConns struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)

	mu    sync.Mutex
	peers map[string]*peerConn
	quit  chan struct{}
}

type peerConn struct {
	mu sync.Mutex // held while dialling
	rc *rpcConn
}

func newPeerConns(dial func(ctx context.Context, addr string) (net.Conn, error)) *peerConns {
	return &peerConns{dial: dial, peers: map[string]*peerConn{}, quit: make(chan struct{})}
}

// get returns the connection to addr, dialling it when there is none or
// it broke. A failure to connect wraps errNotSent.
func (p *peerConns) get(ctx context.Context, addr string) (*rpcConn, error) {
	p.mu.Lock()
	select {
	case <-p.quit:
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", errNotSent, ErrClosed)
	default:
	}
	pc := p.peers[addr]
	if pc == nil {
		pc = &peerConn{}
		p.peers[addr] = pc
	}
	p.mu.Unlock()

	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.rc != nil && !pc.rc.broken() {
		return pc.rc, nil
	}
	c, err := p.dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %w", errNotSent, addr, err)
	}
	pc.rc = newRPCConn(c)
	p.mu.Lock()
	closed := false
	select {
	case <-p.quit:
		closed = true
	default:
	}
	p.mu.Unlock()
	if closed {
		pc.rc.close()
		return nil, fmt.Errorf("%w: %w", errNotSent, ErrClosed)
	}
	return pc.rc, nil
}

func (p *peerConns) close() {
	p.mu.Lock()
	close(p.quit)
	peers := p.peers
	p.mu.Unlock()
	for _, pc := range peers {
		pc.mu.Lock()
		if pc.rc != nil {
			pc.rc.close()
		}
		pc.mu.Unlock()
	}
}

// serveRPC answers the requests of one RPC connection until it ends.
func (n *Node) serveRPC(c net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer c.Close()
	var (
		w    = newFrameWriter(c)
		br   = bufio.NewReaderSize(c, rpcReadBuffer)
		wg   sync.WaitGroup
		slot = make(chan struct{}, maxServing)
	)
	defer wg.Wait()
	for {
		f, err := readFrame(br, c)
		if err != nil {
			return
		}
		slot <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slot }()
			if err := w.write(n.answer(ctx, f)); err != nil {
				c.Close()
			}
		}()
	}
}

// answer serves one request.
func (n *Node) answer(ctx context.Context, f frame) frame {
	ok := func(payload []byte) frame { return frame{id: f.id, payload: payload} }
	switch f.kind {
	case rpcPropose:
		timeout, cmds, err := decodeForward(f.payload)
		clear(f.payload) // plaintext secrets
		if err != nil {
			return errorFrame(f.id, err)
		}
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		res, index, err := n.proposeLocal(ctx, cmds, true)
		if err != nil {
			return errorFrame(f.id, err)
		}
		return ok(encodeResults(res, index))
	case rpcPeer:
		return jsonAnswer(f.id, n.peerStatus(), nil)
	case rpcStatus:
		ctx, cancel := context.WithTimeout(ctx, statusTimeout)
		defer cancel()
		st, err := n.Status(ctx)
		return jsonAnswer(f.id, st, err)
	case rpcAddVoter, rpcRemoveServer:
		var req membershipRequest
		if err := unmarshal(f.payload, &req); err != nil {
			return errorFrame(f.id, err)
		}
		ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
		defer cancel()
		var err error
		switch {
		case f.kind == rpcRemoveServer:
			err = n.removeServer(ctx, req.ID, req.Forwarded)
		default:
			err = n.addVoter(ctx, req.ID, req.Addr, req.Forwarded)
		}
		if err != nil {
			return errorFrame(f.id, err)
		}
		return ok(nil)
	}
	return errorFrame(f.id, fmt.Errorf("unknown request %d", f.kind))
}
