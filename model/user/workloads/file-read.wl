# description: read(2) fills the page cache (Cached, Buffers); a second read hits it; mapped files fault pages in
boot mem=64M
file /data/log 4M
file /data/db 2M
spawn reader
read /data/log
read /data/log 0 1M
mmap m 2M file=/data/db prot=r
load m
report meminfo,free
