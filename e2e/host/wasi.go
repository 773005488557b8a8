package host

import (
	"crypto/rand"
	"sort"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// WASI errno values used by Envoy's implementations.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoNotdir  = 20
	errnoFault   = 21
	errnoInval   = 28
	errnoNoent   = 44
	errnoNosys   = 52
	errnoNotsup  = 58
)

// monoBase anchors the monotonic clock of clock_time_get.
var monoBase = time.Now()

// wasiFuncs is FOR_ALL_WASI_FUNCTIONS with Envoy's behaviour (src/exports.cc): stdout and
// stderr go to the log at info and error, environment variables come from the VM
// configuration, there are no arguments, no files and no sockets, and poll_oneoff returns at
// once with no events (Envoy ≥ 1.39; older versions answered ENOSYS). Parameter lists follow
// Envoy's declarations, including its 6-word path_link and 4-word path_symlink.
func wasiFuncs() []hostFunc {
	f := func(name string, params []api.ValueType, fn func(v *vm, s []uint64) uint32) hostFunc {
		return hostFunc{module: "wasi", name: name, params: params, results: ret1,
			fn: func(v *vm, s []uint64) { s[0] = uint64(fn(v, s)) }}
	}
	errno := func(e uint32) func(*vm, []uint64) uint32 { return func(*vm, []uint64) uint32 { return e } }
	stdio := func(fd uint32) bool { return fd == 1 || fd == 2 }
	// onStdio: success for stdout/stderr, EBADF otherwise.
	onStdio := func(v *vm, s []uint64) uint32 {
		if stdio(w(s, 0)) {
			return errnoSuccess
		}
		return errnoBadf
	}
	t := func(types ...api.ValueType) []api.ValueType { return types }
	return []hostFunc{
		f("fd_write", ints(4), func(v *vm, s []uint64) uint32 {
			n, e := v.writev(w(s, 0), w(s, 1), w(s, 2))
			if e == errnoSuccess && !v.putU32(w(s, 3), n) {
				return errnoFault
			}
			return e
		}),
		f("fd_read", ints(4), errno(errnoNosys)),
		f("fd_seek", t(i32, i64, i32, i32), func(v *vm, _ []uint64) uint32 {
			v.h.addLog(LogError, v.worker, "wasi_unstable fd_seek", true)
			return errnoSuccess
		}),
		f("fd_close", ints(1), func(v *vm, _ []uint64) uint32 {
			v.h.addLog(LogError, v.worker, "wasi_unstable fd_close", true)
			return errnoSuccess
		}),
		f("fd_fdstat_get", ints(2), func(v *vm, s []uint64) uint32 {
			if !stdio(w(s, 0)) {
				return errnoBadf
			}
			stat := make([]byte, 24)
			stat[8] = 64 // fs_rights_base = __WASI_RIGHTS_FD_WRITE
			v.putBytes(w(s, 1), stat)
			return errnoSuccess
		}),
		f("fd_fdstat_set_flags", ints(2), errno(errnoNosys)),
		f("fd_fdstat_set_rights", t(i32, i64, i64), onStdio),
		f("environ_get", ints(2), func(v *vm, s []uint64) uint32 {
			arr, buf := w(s, 0), w(s, 1)
			for _, kv := range v.h.environ() {
				if !v.putU32(arr, buf) || !v.putBytes(buf, append([]byte(kv), 0)) {
					return errnoFault
				}
				buf += uint32(len(kv)) + 1
				arr += 4
			}
			return errnoSuccess
		}),
		f("environ_sizes_get", ints(2), func(v *vm, s []uint64) uint32 {
			env := v.h.environ()
			size := 0
			for _, kv := range env {
				size += len(kv) + 1
			}
			if !v.putU32(w(s, 0), uint32(len(env))) || !v.putU32(w(s, 1), uint32(size)) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("args_get", ints(2), errno(errnoSuccess)),
		f("args_sizes_get", ints(2), func(v *vm, s []uint64) uint32 {
			if !v.putU32(w(s, 0), 0) || !v.putU32(w(s, 1), 0) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("clock_time_get", t(i32, i64, i32), func(v *vm, s []uint64) uint32 {
			var now uint64
			switch w(s, 0) {
			case 0:
				now = uint64(v.h.wallNow().UnixNano())
			case 1:
				now = uint64(time.Since(monoBase)) + 1
			default:
				return errnoNotsup
			}
			if !v.putU64(w(s, 2), now) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("clock_res_get", ints(2), func(v *vm, s []uint64) uint32 {
			if w(s, 0) > 1 {
				return errnoNotsup
			}
			if !v.putU64(w(s, 1), 1) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("fd_advise", t(i32, i64, i64, i32), errno(errnoSuccess)),
		f("fd_allocate", t(i32, i64, i64), onStdio),
		f("fd_datasync", ints(1), onStdio),
		f("fd_filestat_set_size", t(i32, i64), onStdio),
		f("fd_filestat_set_times", t(i32, i64, i64, i32), onStdio),
		f("fd_pread", t(i32, i32, i32, i64, i32), errno(errnoNosys)),
		f("fd_pwrite", t(i32, i32, i32, i64, i32), func(v *vm, s []uint64) uint32 {
			if !stdio(w(s, 0)) {
				return errnoBadf
			}
			n, e := v.writev(w(s, 0), w(s, 1), w(s, 2))
			if e == errnoSuccess && !v.putU32(w(s, 4), n) {
				return errnoFault
			}
			return e
		}),
		f("fd_readdir", t(i32, i32, i32, i64, i32), func(v *vm, s []uint64) uint32 {
			if !v.putU32(w(s, 4), 0) {
				return errnoFault
			}
			return errnoNotdir
		}),
		f("fd_renumber", ints(2), func(v *vm, s []uint64) uint32 {
			if !stdio(w(s, 0)) || !stdio(w(s, 1)) {
				return errnoBadf
			}
			return errnoNotsup
		}),
		f("fd_sync", ints(1), onStdio),
		f("fd_tell", ints(2), func(v *vm, s []uint64) uint32 {
			if !stdio(w(s, 0)) {
				return errnoBadf
			}
			if !v.putU64(w(s, 1), 0) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("path_create_directory", ints(3), errno(errnoNotsup)),
		f("path_filestat_set_times", t(i32, i32, i32, i32, i64, i64, i32), errno(errnoNotsup)),
		f("path_link", ints(6), errno(errnoNotsup)),
		f("path_readlink", ints(6), func(v *vm, s []uint64) uint32 {
			if !v.putU32(w(s, 5), 0) {
				return errnoFault
			}
			return errnoNotsup
		}),
		f("path_remove_directory", ints(3), errno(errnoNotsup)),
		f("path_rename", ints(6), errno(errnoNotsup)),
		f("path_symlink", ints(4), errno(errnoNotsup)),
		f("path_unlink_file", ints(3), errno(errnoNotsup)),
		f("sock_accept", ints(3), func(v *vm, s []uint64) uint32 {
			if !v.putU64(w(s, 2), 0) {
				return errnoFault
			}
			return errnoNotsup
		}),
		f("sock_recv", ints(6), func(v *vm, s []uint64) uint32 {
			if !v.putU32(w(s, 4), 0) || !v.putBytes(w(s, 5), []byte{0, 0}) {
				return errnoFault
			}
			return errnoNotsup
		}),
		f("sock_send", ints(5), func(v *vm, s []uint64) uint32 {
			if !v.putU32(w(s, 4), 0) {
				return errnoFault
			}
			return errnoNotsup
		}),
		f("sock_shutdown", ints(2), errno(errnoNotsup)),
		f("random_get", ints(2), func(v *vm, s []uint64) uint32 {
			n := w(s, 1)
			if n > 64<<10 {
				return errnoInval
			}
			if n == 0 {
				return errnoSuccess
			}
			b := make([]byte, n)
			_, _ = rand.Read(b)
			if !v.putBytes(w(s, 0), b) {
				return errnoFault
			}
			return errnoSuccess
		}),
		f("sched_yield", nil, errno(errnoSuccess)),
		f("poll_oneoff", ints(4), func(v *vm, s []uint64) uint32 {
			v.h.polls.Add(1)
			if v.h.cfg.LegacyCppHost {
				return errnoNosys // before proxy-wasm-cpp-host 94091cd: not implemented
			}
			if !v.putU32(w(s, 3), 0) {
				return errnoFault
			}
			return errnoSuccess
		}),
		// proc_exit only logs in Envoy; it does not stop the module.
		{module: "wasi", name: "proc_exit", params: ints(1), fn: func(v *vm, _ []uint64) {
			v.h.addLog(LogError, v.worker, "wasi_unstable proc_exit", true)
		}},
		f("path_open", t(i32, i32, i32, i32, i32, i64, i64, i32, i32), errno(errnoNoent)),
		f("fd_prestat_get", ints(2), errno(errnoBadf)),
		f("fd_prestat_dir_name", ints(3), errno(errnoNosys)),
		f("path_filestat_get", ints(5), errno(errnoNotsup)),
		f("fd_filestat_get", ints(2), errno(errnoBadf)),
	}
}

// writev is Envoy's writevImpl: stdout becomes an info log line, stderr an error line, one
// line per call with a trailing newline removed.
func (v *vm) writev(fd, iovs, n uint32) (uint32, uint32) {
	level := LogInfo
	switch fd {
	case 1:
	case 2:
		level = LogError
	default:
		return 0, errnoBadf
	}
	var out []byte
	for i := uint32(0); i < n; i++ {
		iov, ok := v.read(iovs+8*i, 8)
		if !ok {
			return 0, errnoFault
		}
		ptr, size := le32(iov[0:4]), le32(iov[4:8])
		if size == 0 {
			continue
		}
		b, ok := v.read(ptr, size)
		if !ok {
			return 0, errnoFault
		}
		out = append(out, b...)
	}
	if len(out) > 0 {
		msg := out
		if msg[len(msg)-1] == '\n' {
			msg = msg[:len(msg)-1]
		}
		v.h.addLog(level, v.worker, string(msg), false)
	}
	return uint32(len(out)), errnoSuccess
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// environ is the VM's environment as KEY=VALUE strings, sorted for a stable order.
func (h *Host) environ() []string {
	out := make([]string, 0, len(h.cfg.Env))
	for k, val := range h.cfg.Env {
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return out
}
