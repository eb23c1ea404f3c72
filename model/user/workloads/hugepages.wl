# description: MAP_HUGETLB maps 2M pages from the boot-time hugetlb pool; fork shares them copy-on-write
boot mem=128M hugepages=8
spawn db
mmap pool 8M huge
touch pool 0 4M
fork worker
use worker
touch pool 0 2M
report meminfo,maps
