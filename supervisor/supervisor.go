// Package supervisor runs Fava as a child process of favaproxy: on a private
// loopback port that it picks, restarted when it dies, and stopped when
// favaproxy stops — even when favaproxy itself is killed with SIGKILL, so no
// orphaned Fava keeps writing the ledger without the lock.
//
// Fava reads its listen address from the environment (click's FAVA_ prefix:
// FAVA_HOST, FAVA_PORT); the supervisor sets both. Options on the command
// line win over the environment in Fava, so the command must not carry
// -H/--host or -p/--port.
//
// # Dying with the parent
//
// On Linux every child is started with PR_SET_PDEATHSIG=SIGKILL and in its
// own process group. The kernel sends the death signal when the *thread*
// that forked the child exits, not the process, and the Go runtime may end
// threads; so every child is forked from one goroutine that locks its OS
// thread and stays alive (and locked) as long as a child may run. On other
// systems no parent-death signal is set: Close and context cancellation
// still stop the child, but a SIGKILL of favaproxy leaves it running.
//
// # Port
//
// The port is found by listening on 127.0.0.1:0 and closing the listener
// before the child binds it. Another process may take the port in between;
// the child then fails to bind and exits, and Start tries again with a new
// port (up to three children). After Start returns, the URL is fixed and a
// restarted child reuses the same port.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Options configure Start. Only Command is required.
type Options struct {
	// Command is the child's argv, for example ["fava", "ledger.beancount"].
	// Command[0] is looked up in PATH.
	Command []string
	// Env is added to favaproxy's own environment for the child. The
	// supervisor then sets FAVA_HOST=127.0.0.1 and FAVA_PORT=<port>, which
	// win over Env.
	Env []string
	// Dir is the child's working directory. Empty means favaproxy's.
	Dir string
	// Stdout and Stderr receive the child's output. Nil means favaproxy's
	// own stdout and stderr.
	Stdout, Stderr io.Writer
	// Logger receives one line per start, exit and restart. Nil means
	// slog.Default().
	Logger *slog.Logger
	// ReadyTimeout bounds how long a started child may take to answer HTTP
	// on its port (any status counts). Fava parses every ledger before it
	// listens, so large ledgers need time. Zero means 60s.
	ReadyTimeout time.Duration
	// RestartBackoff bounds the delay before a child that exited is
	// started again.
	RestartBackoff Backoff
	// StopSignal is sent to the child's process group to stop it. Zero
	// means SIGTERM.
	StopSignal os.Signal
	// StopGrace is how long a stopping child may take after StopSignal
	// before its process group is killed. Zero means 10s.
	StopGrace time.Duration
}

// Backoff is a bounded exponential delay.
type Backoff struct {
	// Initial is the delay before the first restart. Zero means 500ms.
	Initial time.Duration
	// Max caps the delay. A child that stayed up at least Max resets the
	// delay to Initial. Zero means 30s.
	Max time.Duration
}

// Supervisor runs one child command. Create it with Start.
type Supervisor struct {
	o    Options
	log  *slog.Logger
	port int
	url  string

	forker *forker
	cancel context.CancelFunc
	done   chan struct{} // closed when run has stopped the last child

	// mu guards state and restarts.
	mu       sync.Mutex
	state    error // nil while the child answers; else why not
	restarts int   // children that exited since Start returned

	closeErr error // set by run before done is closed
}

// ErrStopped is what Ready reports once the supervisor has stopped.
var ErrStopped = errors.New("supervisor stopped")

// Start picks a free loopback port, starts the child with FAVA_HOST and
// FAVA_PORT set and returns once GET / on that port answers with any status.
// It fails when the child cannot be started, exits before answering (three
// times, each on a new port) or does not answer within ReadyTimeout.
//
// ctx bounds the supervisor's life: cancelling it stops the child as Close
// does. A server should pass a context that outlives its own graceful
// shutdown and call Close after the HTTP server has drained, so that writes
// in flight reach Fava before Fava stops.
func Start(ctx context.Context, o Options) (*Supervisor, error) {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, errors.New("start child: empty command")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.RestartBackoff.Initial <= 0 {
		o.RestartBackoff.Initial = 500 * time.Millisecond
	}
	if o.RestartBackoff.Max <= 0 {
		o.RestartBackoff.Max = 30 * time.Second
	}
	if o.RestartBackoff.Max < o.RestartBackoff.Initial {
		o.RestartBackoff.Max = o.RestartBackoff.Initial
	}
	if o.StopSignal == nil {
		o.StopSignal = stopSignal
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	s := &Supervisor{
		o:      o,
		log:    o.Logger.With("child", o.Command[0]),
		forker: newForker(),
		done:   make(chan struct{}),
		state:  errors.New("child starting"),
	}

	const attempts = 3
	deadline := time.Now().Add(o.ReadyTimeout)
	var c *child
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			s.forker.stop()
			return nil, err
		}
		s.port, s.url = port, "http://127.0.0.1:"+strconv.Itoa(port)
		c, err = s.spawn()
		if err != nil {
			s.forker.stop()
			return nil, err
		}
		err = s.waitReady(ctx, c, deadline)
		if err == nil {
			break
		}
		s.stopChild(c)
		if errors.Is(err, errExited) && attempt < attempts && time.Now().Before(deadline) {
			s.log.Warn("child exited before answering; trying a new port", "port", port, "attempt", attempt, "err", err)
			continue
		}
		s.forker.stop()
		return nil, err
	}
	s.setState(nil)

	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx, c)
	return s, nil
}

// URL returns the child's base URL, http://127.0.0.1:PORT: the upstream
// favaproxy proxies to. It does not change when the child is restarted.
func (s *Supervisor) URL() string { return s.url }

// Ready returns nil while the child is running and has answered HTTP since
// it was last started; otherwise it says why not (exited, restarting,
// stopped).
func (s *Supervisor) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close stops restarting, sends StopSignal to the child's process group,
// kills the group after StopGrace and waits for the child to exit. It
// returns an error only if the child had to be killed. It is safe to call
// more than once.
func (s *Supervisor) Close() error {
	s.cancel()
	<-s.done
	return s.closeErr
}

// Restarts returns how many times the child has exited since Start
// returned, each followed by a restart unless the supervisor was stopping:
// a counter for metrics.
func (s *Supervisor) Restarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restarts
}

func (s *Supervisor) setState(err error) {
	s.mu.Lock()
	s.state = err
	s.mu.Unlock()
}

// child is one started process.
type child struct {
	cmd     *exec.Cmd
	pid     int
	started time.Time
	exited  chan struct{} // closed once Wait returned
	err     error         // Wait's result; read after exited is closed

	// mu guards reaped. It is held while the child's process group is
	// signalled, so the child is not reaped meanwhile: an unreaped child
	// keeps its PID, and so its group ID, from being reused.
	mu     sync.Mutex
	reaped bool
}

// wait reaps the child. On Linux it first waits for the exit without
// reaping and kills what is left in the child's group (grandchildren),
// while the zombie still holds the group ID.
func (c *child) wait() {
	if awaitExit(c.pid) {
		c.mu.Lock()
		killGroup(c.cmd.Process)
		c.reaped = true
		c.mu.Unlock()
	}
	err := c.cmd.Wait()
	c.mu.Lock()
	c.reaped = true
	c.mu.Unlock()
	c.err = err
	close(c.exited)
}

// signal sends sig to the child's process group unless the child has been
// reaped.
func (c *child) signal(sig os.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reaped {
		signalGroup(c.cmd.Process, sig)
	}
}

var errExited = errors.New("child exited")

// spawn starts one child on s.port.
func (s *Supervisor) spawn() (*child, error) {
	cmd := exec.Command(s.o.Command[0], s.o.Command[1:]...)
	cmd.Env = append(append(os.Environ(), s.o.Env...),
		"FAVA_HOST=127.0.0.1", "FAVA_PORT="+strconv.Itoa(s.port))
	cmd.Dir = s.o.Dir
	cmd.Stdout, cmd.Stderr = s.o.Stdout, s.o.Stderr
	cmd.SysProcAttr = sysProcAttr()
	// Output copied through pipes must not keep Wait blocked on a
	// grandchild that inherited them.
	cmd.WaitDelay = time.Second
	if err := s.forker.start(cmd); err != nil {
		return nil, fmt.Errorf("start child %s: %w", s.o.Command[0], err)
	}
	c := &child{cmd: cmd, pid: cmd.Process.Pid, started: time.Now(), exited: make(chan struct{})}
	go c.wait()
	s.log.Info("child started", "pid", c.pid, "url", s.url)
	return c, nil
}

// waitReady polls GET / until it answers, the child exits, ctx is done or
// the deadline passes.
func (s *Supervisor) waitReady(ctx context.Context, c *child, deadline time.Time) error {
	client := &http.Client{
		Timeout: time.Second,
		// A fresh connection per probe: a kept-alive one would outlive the child.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	delay := 10 * time.Millisecond
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("%w before answering on %s: %s", errExited, s.url, exitStatus(c))
		case <-ctx.Done():
			return fmt.Errorf("wait for child: %w", ctx.Err())
		case <-timer.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/", nil)
		if err != nil {
			return fmt.Errorf("probe child: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("child pid %d did not answer on %s within %s", c.pid, s.url, s.o.ReadyTimeout)
		}
		timer.Reset(delay)
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// run watches the running child c, restarts it when it exits and stops it
// when ctx is done.
func (s *Supervisor) run(ctx context.Context, c *child) {
	defer close(s.done)
	defer s.forker.stop()
	defer s.setState(ErrStopped)

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = s.o.RestartBackoff.Initial
	b.MaxInterval = s.o.RestartBackoff.Max
	b.Multiplier = 2
	b.RandomizationFactor = 0.2
	b.MaxElapsedTime = 0 // never give up while favaproxy runs
	b.Reset()

	for {
		if c != nil {
			select {
			case <-ctx.Done():
				s.closeErr = s.stopChild(c)
				return
			case <-c.exited:
			}
			uptime := time.Since(c.started)
			if uptime >= s.o.RestartBackoff.Max {
				b.Reset()
			}
			delay := b.NextBackOff()
			s.mu.Lock()
			s.restarts++
			s.state = fmt.Errorf("child pid %d exited (%s); restarting in %s", c.pid, exitStatus(c), delay.Round(time.Millisecond))
			s.mu.Unlock()
			s.log.Warn("child exited", "pid", c.pid, "status", exitStatus(c), "uptime", uptime.Round(time.Millisecond), "restart_in", delay.Round(time.Millisecond))
			c = nil
			if !sleep(ctx, delay) {
				return
			}
		}

		var err error
		c, err = s.spawn()
		if err != nil {
			delay := b.NextBackOff()
			s.setState(fmt.Errorf("%w; retrying in %s", err, delay.Round(time.Millisecond)))
			s.log.Error("child not restarted", "err", err, "retry_in", delay.Round(time.Millisecond))
			if !sleep(ctx, delay) {
				return
			}
			continue
		}
		if err := s.waitReady(ctx, c, time.Now().Add(s.o.ReadyTimeout)); err != nil {
			if ctx.Err() != nil {
				s.closeErr = s.stopChild(c)
				return
			}
			if !errors.Is(err, errExited) {
				// Running but deaf: stop it and count it as an exit.
				s.log.Warn("child did not answer; stopping it", "pid", c.pid, "err", err)
				s.stopChild(c)
			}
			continue // c has exited: the top of the loop logs and waits
		}
		s.setState(nil)
		s.log.Info("child ready", "pid", c.pid, "url", s.url)
	}
}

// sleep waits for d and reports whether it did: false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// stopChild sends StopSignal to c's process group, kills the group after
// StopGrace, and waits for c to exit. It reports whether c had to be killed.
func (s *Supervisor) stopChild(c *child) error {
	select {
	case <-c.exited:
		return nil
	default:
	}
	c.signal(s.o.StopSignal)
	t := time.NewTimer(s.o.StopGrace)
	defer t.Stop()
	var err error
	select {
	case <-c.exited:
	case <-t.C:
		c.signal(os.Kill)
		<-c.exited
		err = fmt.Errorf("stop child pid %d: still running after %s; killed", c.pid, s.o.StopGrace)
	}
	s.log.Info("child stopped", "pid", c.pid, "status", exitStatus(c))
	return err
}

func exitStatus(c *child) string {
	if c.cmd.ProcessState != nil {
		return c.cmd.ProcessState.String()
	}
	if c.err != nil {
		return c.err.Error()
	}
	return "unknown"
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick child port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// forker starts every child of one Supervisor from one goroutine locked to
// its OS thread, because the parent-death signal fires when the forking
// thread exits. The goroutine, and so the thread, lives until stop, which
// is called only once no child runs any more.
type forker struct {
	reqs chan forkReq
	once sync.Once
}

type forkReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func newForker() *forker {
	f := &forker{reqs: make(chan forkReq)}
	go f.loop()
	return f
}

func (f *forker) loop() {
	// Never unlocked: when this goroutine returns, the runtime ends the
	// thread, which is safe only because no child is left by then.
	runtime.LockOSThread()
	for r := range f.reqs {
		r.errc <- r.cmd.Start()
	}
}

func (f *forker) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	f.reqs <- forkReq{cmd: cmd, errc: errc}
	return <-errc
}

func (f *forker) stop() { f.once.Do(func() { close(f.reqs) }) }
