# description: private file mappings copy on write; shared ones dirty the page cache, written back by sync
boot mem=64M
file /data/table 1M
spawn editor
mmap priv 1M file=/data/table private
load priv
touch priv 0 64K
mmap shr 1M file=/data/table shared
touch shr 0 256K
report meminfo
sync
munmap shr
report meminfo
