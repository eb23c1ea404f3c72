# description: fork shares every page read-only; the first write in either process copies it (COW)
boot mem=64M
spawn parent
malloc buf 512K
touch buf
malloc heapbuf 64K
touch heapbuf
fork child
use child
load buf
touch buf 0 128K
touch heapbuf
use parent
touch buf 256K 64K
report top
exit child
report top
