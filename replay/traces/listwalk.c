/* A small program with three kinds of memory behaviour for TLB experiments:
 * a sequential array sum (one new data page every 1024 ints), a linked-list
 * walk over nodes scattered across the heap (a new page almost every step),
 * and a few malloc/free rounds.  Built with gcc -O1 and traced with
 * valgrind --tool=lackey --trace-mem=yes (see Makefile and docs/traces.md). */
#include <stdio.h>
#include <stdlib.h>

#define ARRAY_INTS (64 * 1024)   /* 256 KiB: 64 pages */
#define NODES 2048
#define NODE_STRIDE 37           /* visit order: i * 37 mod NODES, a permutation */

struct node {
    struct node *next;
    long value;
    char pad[240];               /* 256-byte nodes: 16 per page */
};

static long sum_array(const int *a, size_t n)
{
    long s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i];
    return s;
}

static long walk_list(const struct node *n)
{
    long s = 0;
    for (; n; n = n->next)
        s += n->value;
    return s;
}

int main(void)
{
    int *a = malloc(ARRAY_INTS * sizeof *a);
    struct node *nodes = malloc(NODES * sizeof *nodes);
    if (!a || !nodes)
        return 1;
    for (size_t i = 0; i < ARRAY_INTS; i++)
        a[i] = (int)i;

    /* Link the nodes in a scattered order so the walk jumps between pages. */
    struct node *head = NULL;
    for (size_t k = 0; k < NODES; k++) {
        struct node *n = &nodes[(k * NODE_STRIDE) % NODES];
        n->value = (long)k;
        n->next = head;
        head = n;
    }

    long total = sum_array(a, ARRAY_INTS) + walk_list(head);

    /* A few allocation rounds of growing size: small bins, then mmap. */
    for (size_t size = 64; size <= 256 * 1024; size *= 8) {
        char *p = malloc(size);
        if (!p)
            return 1;
        for (size_t i = 0; i < size; i += 64)
            p[i] = (char)i;
        total += p[size / 2];
        free(p);
    }

    free(nodes);
    free(a);
    printf("%ld\n", total);
    return 0;
}
