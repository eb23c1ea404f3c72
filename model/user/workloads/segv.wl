# description: bad accesses get SIGSEGV: no VMA, a write to a read-only mprotect'ed page, a fetch from NX memory
boot mem=64M
spawn a
load 0x10
spawn b
mmap buf 8K
touch buf
mprotect buf r
load buf
touch buf
spawn c
mmap data 64K
touch data
exec data
report top
