/*
 * fse_binding.c -- thin CPython binding for fse_core (module l3ic_jax._fse).
 *
 * Inputs are any C-contiguous buffer of 1-byte items (bytes, bytearray,
 * memoryview, uint8/int8 NumPy arrays); lists of ints are not accepted.
 * The GIL is released around all C work; the batch calls code many buffers
 * in parallel on POSIX threads and return exactly what the one-by-one calls
 * return.  The public, documented API is l3ic_jax.fse; this module is its
 * engine.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fse_core.h"

static PyObject *FSEError;              /* base class, attributes name/code/index */
static PyObject *NotCompressibleError;  /* compress result 0 */
static PyObject *SymbolRepetitionError; /* compress result 1 (RLE) */

#define MAX_THREADS 256

/* ------------------------------------------------------------------ */
/* errors                                                               */
/* ------------------------------------------------------------------ */

/* A new instance type(message) with .name, .code and .index (if >= 0) set. */
static PyObject *make_error(PyObject *type, const char *message, const char *name,
                            int code, Py_ssize_t index)
{
    PyObject *exc = PyObject_CallFunction(type, "s", message), *v;
    if (exc == NULL) return NULL;
    v = PyUnicode_FromString(name);
    if (v == NULL || PyObject_SetAttrString(exc, "name", v) < 0) goto fail;
    Py_DECREF(v);
    v = PyLong_FromLong(code);
    if (v == NULL || PyObject_SetAttrString(exc, "code", v) < 0) goto fail;
    Py_DECREF(v);
    v = NULL;
    if (index >= 0) {
        v = PyLong_FromSsize_t(index);
        if (v == NULL || PyObject_SetAttrString(exc, "index", v) < 0) goto fail;
        Py_DECREF(v);
    }
    return exc;
fail:
    Py_XDECREF(v);
    Py_DECREF(exc);
    return NULL;
}

/* The exception object for a core result that is not data: an error code,
 * or (for compress) 0 / 1. */
static PyObject *result_error(size_t r, int compressing, Py_ssize_t index)
{
    if (l3fse_is_error(r))
        return make_error(FSEError, l3fse_error_message(r), l3fse_error_name(r),
                          (int)l3fse_error_code(r), index);
    if (compressing && r == L3FSE_RLE)
        return make_error(SymbolRepetitionError,
                          "input is one byte value repeated (store it as RLE)", "rle", 1,
                          index);
    return make_error(NotCompressibleError, "input is not compressible (store it raw)",
                      "not_compressible", 0, index);
}

/* Raise result_error(...); returns NULL. */
static PyObject *raise_result(size_t r, int compressing)
{
    PyObject *exc = result_error(r, compressing, -1);
    if (exc == NULL) return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* buffers                                                              */
/* ------------------------------------------------------------------ */

/* A C-contiguous view with 1-byte items.  Returns 0, or -1 with an error set. */
static int get_byte_view(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) { /* numpy: not C-contiguous */
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "expected a C-contiguous bytes-like object (bytes, bytearray, "
                         "memoryview, uint8 array), got %.200s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (view->itemsize != 1) {
        PyErr_Format(PyExc_TypeError,
                     "expected 1-byte items, got a buffer of itemsize %zd "
                     "(use arr.view(np.uint8) or arr.tobytes() to code its bytes)",
                     view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* one-by-one calls                                                     */
/* ------------------------------------------------------------------ */

PyDoc_STRVAR(compress_doc,
"compress(data, legacy=False) -> bytes\n\n"
"FSE-compress a bytes-like object (reference FSE_compress format).\n"
"Raises NotCompressibleError (result 0: store raw), SymbolRepetitionError\n"
"(result 1: one repeated byte) or FSEError.  legacy=True uses the table-log\n"
"rule of the FSE copy bundled with pyfse.");

static PyObject *py_compress(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "legacy", NULL};
    PyObject *data, *out = NULL;
    int legacy = 0;
    Py_buffer view;
    size_t n, cap, r;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:compress", kwlist, &data, &legacy))
        return NULL;
    if (get_byte_view(data, &view) < 0) return NULL;
    n = (size_t)view.len;
    if (n <= 1) {
        PyBuffer_Release(&view);
        return raise_result(L3FSE_NOT_COMPRESSIBLE, 1);
    }
    cap = L3FSE_COMPRESS_FAST_CAPACITY(n);
    if (cap > (size_t)PY_SSIZE_T_MAX) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    r = l3fse_compress(PyBytes_AS_STRING(out), cap, view.buf, n, legacy);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (l3fse_is_error(r) || r <= L3FSE_RLE) { Py_DECREF(out); return raise_result(r, 1); }
    if (_PyBytes_Resize(&out, (Py_ssize_t)r) < 0) return NULL;
    return out;
}

PyDoc_STRVAR(decompress_doc,
"decompress(data, max_size) -> bytes\n\n"
"Decode one exact FSE stream (reference FSE_decompress).  The stream sets\n"
"the output length; more than max_size bytes raises FSEError\n"
"(name 'dstSize_tooSmall').  Malformed input raises FSEError.");

static PyObject *py_decompress(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "max_size", NULL};
    PyObject *data, *out;
    Py_ssize_t max_size;
    Py_buffer view;
    size_t r;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On:decompress", kwlist, &data, &max_size))
        return NULL;
    if (max_size < 0) {
        PyErr_SetString(PyExc_ValueError, "max_size must be >= 0");
        return NULL;
    }
    if (get_byte_view(data, &view) < 0) return NULL;
    out = PyBytes_FromStringAndSize(NULL, max_size);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    r = l3fse_decompress(PyBytes_AS_STRING(out), (size_t)max_size, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (l3fse_is_error(r)) { Py_DECREF(out); return raise_result(r, 0); }
    if (_PyBytes_Resize(&out, (Py_ssize_t)r) < 0) return NULL;
    return out;
}

/* ------------------------------------------------------------------ */
/* batch calls                                                          */
/* ------------------------------------------------------------------ */

typedef struct {
    const void *src;
    size_t n;
    void *dst;
    size_t cap;
    size_t result;
} job_t;

typedef struct {
    job_t *jobs;
    size_t njobs;
    int decompress;
    int legacy;
    size_t next; /* claimed with an atomic add */
} pool_t;

static void *worker(void *arg)
{
    pool_t *pool = (pool_t *)arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&pool->next, 1, __ATOMIC_RELAXED);
        job_t *j;
        if (i >= pool->njobs) break;
        j = &pool->jobs[i];
        if (pool->decompress)
            j->result = l3fse_decompress(j->dst, j->cap, j->src, j->n);
        else
            j->result = l3fse_compress(j->dst, j->cap, j->src, j->n, pool->legacy);
    }
    return NULL;
}

static long cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

/* Run all jobs on up to `threads` threads (the caller's thread included).
 * Called without the GIL. */
static void run_pool(pool_t *pool, long threads)
{
    pthread_t tid[MAX_THREADS];
    long started = 0, i;
    if (threads <= 0) threads = cpu_count();
    if ((size_t)threads > pool->njobs) threads = (long)pool->njobs;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    for (i = 1; i < threads; i++) {
        if (pthread_create(&tid[started], NULL, worker, pool) != 0) break;
        started++;
    }
    worker(pool);
    for (i = 0; i < started; i++) pthread_join(tid[i], NULL);
}

/* Common frame: views of all inputs, an output bytes object per job. */
typedef struct {
    Py_ssize_t n;
    Py_buffer *views;
    PyObject **outs;
    job_t *jobs;
    Py_ssize_t nviews;
} batch_t;

static void batch_free(batch_t *b)
{
    Py_ssize_t i;
    for (i = 0; i < b->nviews; i++) PyBuffer_Release(&b->views[i]);
    if (b->outs)
        for (i = 0; i < b->n; i++) Py_XDECREF(b->outs[i]);
    PyMem_Free(b->views);
    PyMem_Free(b->outs);
    PyMem_Free(b->jobs);
}

/* The list a batch call returns: per item the output bytes (trimmed to the result length), or the exception
 * instance the one-by-one call would raise (compress: also for the special results 0 and 1). */
static PyObject *batch_results(batch_t *b, int compressing)
{
    PyObject *result = PyList_New(b->n);
    Py_ssize_t i;
    if (result == NULL) return NULL;
    for (i = 0; i < b->n; i++) {
        size_t r = b->jobs[i].result;
        PyObject *o;
        if (l3fse_is_error(r) || (compressing && r <= L3FSE_RLE)) {
            o = result_error(r, compressing, i);
        } else {
            o = b->outs[i];
            b->outs[i] = NULL;
            if (_PyBytes_Resize(&o, (Py_ssize_t)r) < 0) o = NULL;
        }
        if (o == NULL) { Py_DECREF(result); return NULL; }
        PyList_SET_ITEM(result, i, o);
    }
    return result;
}

static int batch_init(batch_t *b, PyObject *seq)
{
    Py_ssize_t i;
    memset(b, 0, sizeof(*b));
    b->n = PySequence_Fast_GET_SIZE(seq);
    b->views = PyMem_Calloc((size_t)b->n + 1, sizeof(Py_buffer));
    b->outs = PyMem_Calloc((size_t)b->n + 1, sizeof(PyObject *));
    b->jobs = PyMem_Calloc((size_t)b->n + 1, sizeof(job_t));
    if (!b->views || !b->outs || !b->jobs) {
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < b->n; i++) {
        if (get_byte_view(PySequence_Fast_GET_ITEM(seq, i), &b->views[i]) < 0) return -1;
        b->nviews++;
        b->jobs[i].src = b->views[i].buf;
        b->jobs[i].n = (size_t)b->views[i].len;
    }
    return 0;
}

static int parse_threads(PyObject *obj, long *threads)
{
    *threads = obj ? PyLong_AsLong(obj) : 0;
    if (*threads == -1 && PyErr_Occurred()) return -1;
    if (*threads < 0) {
        PyErr_SetString(PyExc_ValueError, "threads must be >= 0 (0: number of CPUs)");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(compress_batch_doc,
"compress_batch(buffers, legacy=False, threads=0) -> list\n\n"
"Compress every buffer, in parallel on `threads` POSIX threads (0: one per\n"
"CPU).  Item i is what compress(buffers[i], legacy) returns -- bytes -- or\n"
"the exception instance it would raise (NotCompressibleError,\n"
"SymbolRepetitionError, FSEError), with .index = i; nothing is raised.");

static PyObject *py_compress_batch(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffers", "legacy", "threads", NULL};
    PyObject *buffers, *seq, *threads_obj = NULL, *result = NULL;
    int legacy = 0;
    long threads;
    batch_t b;
    pool_t pool;
    Py_ssize_t i;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pO:compress_batch", kwlist, &buffers,
                                     &legacy, &threads_obj))
        return NULL;
    if (parse_threads(threads_obj, &threads) < 0) return NULL;
    seq = PySequence_Fast(buffers, "buffers must be a sequence of bytes-like objects");
    if (seq == NULL) return NULL;
    if (batch_init(&b, seq) < 0) goto done;
    for (i = 0; i < b.n; i++) {
        size_t n = b.jobs[i].n;
        size_t cap = n <= 1 ? 0 : L3FSE_COMPRESS_FAST_CAPACITY(n);
        if (cap > (size_t)PY_SSIZE_T_MAX) { PyErr_NoMemory(); goto done; }
        b.outs[i] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
        if (b.outs[i] == NULL) goto done;
        b.jobs[i].dst = PyBytes_AS_STRING(b.outs[i]);
        b.jobs[i].cap = cap;
    }
    pool.jobs = b.jobs;
    pool.njobs = (size_t)b.n;
    pool.decompress = 0;
    pool.legacy = legacy;
    pool.next = 0;
    Py_BEGIN_ALLOW_THREADS
    run_pool(&pool, threads);
    Py_END_ALLOW_THREADS
    result = batch_results(&b, 1);
done:
    batch_free(&b);
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(decompress_batch_doc,
"decompress_batch(buffers, max_sizes, threads=0) -> list\n\n"
"Decode every stream, in parallel on `threads` POSIX threads (0: one per\n"
"CPU).  max_sizes is one int for all streams or one per stream.  Item i is\n"
"what decompress(buffers[i], max_sizes[i]) returns -- bytes -- or the\n"
"FSEError instance it would raise, with .index = i; nothing is raised.");

static PyObject *py_decompress_batch(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buffers", "max_sizes", "threads", NULL};
    PyObject *buffers, *max_sizes, *seq, *sizes = NULL, *threads_obj = NULL, *result = NULL;
    long threads;
    Py_ssize_t i, common = -1;
    batch_t b;
    pool_t pool;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:decompress_batch", kwlist, &buffers,
                                     &max_sizes, &threads_obj))
        return NULL;
    if (parse_threads(threads_obj, &threads) < 0) return NULL;
    seq = PySequence_Fast(buffers, "buffers must be a sequence of bytes-like objects");
    if (seq == NULL) return NULL;
    memset(&b, 0, sizeof(b));
    if (PyLong_Check(max_sizes)) {
        common = PyLong_AsSsize_t(max_sizes);
        if (common == -1 && PyErr_Occurred()) goto done;
        if (common < 0) { PyErr_SetString(PyExc_ValueError, "max_size must be >= 0"); goto done; }
    } else {
        sizes = PySequence_Fast(max_sizes, "max_sizes must be an int or a sequence of ints");
        if (sizes == NULL) goto done;
        if (PySequence_Fast_GET_SIZE(sizes) != PySequence_Fast_GET_SIZE(seq)) {
            PyErr_SetString(PyExc_ValueError, "max_sizes and buffers differ in length");
            goto done;
        }
    }
    if (batch_init(&b, seq) < 0) goto done;
    for (i = 0; i < b.n; i++) {
        Py_ssize_t cap = common;
        if (sizes) {
            cap = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(sizes, i));
            if (cap == -1 && PyErr_Occurred()) goto done;
            if (cap < 0) { PyErr_SetString(PyExc_ValueError, "max_size must be >= 0"); goto done; }
        }
        b.outs[i] = PyBytes_FromStringAndSize(NULL, cap);
        if (b.outs[i] == NULL) goto done;
        b.jobs[i].dst = PyBytes_AS_STRING(b.outs[i]);
        b.jobs[i].cap = (size_t)cap;
    }
    pool.jobs = b.jobs;
    pool.njobs = (size_t)b.n;
    pool.decompress = 1;
    pool.legacy = 0;
    pool.next = 0;
    Py_BEGIN_ALLOW_THREADS
    run_pool(&pool, threads);
    Py_END_ALLOW_THREADS
    result = batch_results(&b, 0);
done:
    batch_free(&b);
    Py_XDECREF(sizes);
    Py_DECREF(seq);
    return result;
}

/* ------------------------------------------------------------------ */
/* module                                                               */
/* ------------------------------------------------------------------ */

static PyMethodDef methods[] = {
    {"compress", (PyCFunction)(void (*)(void))py_compress, METH_VARARGS | METH_KEYWORDS,
     compress_doc},
    {"decompress", (PyCFunction)(void (*)(void))py_decompress, METH_VARARGS | METH_KEYWORDS,
     decompress_doc},
    {"compress_batch", (PyCFunction)(void (*)(void))py_compress_batch,
     METH_VARARGS | METH_KEYWORDS, compress_batch_doc},
    {"decompress_batch", (PyCFunction)(void (*)(void))py_decompress_batch,
     METH_VARARGS | METH_KEYWORDS, decompress_batch_doc},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "l3ic_jax._fse",
    "C engine of l3ic_jax.fse: FSE (tANS) coding of bytes, GIL released.", -1, methods,
    NULL, NULL, NULL, NULL};

static PyObject *new_error(const char *name, const char *doc, PyObject *base,
                           const char *default_name, int default_code)
{
    PyObject *dict = PyDict_New(), *cls = NULL, *v;
    if (dict == NULL) return NULL;
    v = default_name ? PyUnicode_FromString(default_name) : (Py_INCREF(Py_None), Py_None);
    if (v == NULL || PyDict_SetItemString(dict, "name", v) < 0) goto out;
    Py_DECREF(v);
    v = PyLong_FromLong(default_code);
    if (v == NULL || PyDict_SetItemString(dict, "code", v) < 0) goto out;
    Py_DECREF(v);
    v = NULL;
    if (PyDict_SetItemString(dict, "index", Py_None) < 0) goto out;
    cls = PyErr_NewExceptionWithDoc(name, doc, base, dict);
out:
    Py_XDECREF(v);
    Py_DECREF(dict);
    return cls;
}

PyMODINIT_FUNC PyInit__fse(void)
{
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    FSEError = new_error("l3ic_jax._fse.FSEError",
                         "FSE coding failed.  .name is the reference error name "
                         "(e.g. 'corruption_detected'), .code its number, .index the "
                         "failing item of a batch call (else None).",
                         NULL, NULL, 0);
    if (FSEError == NULL) goto fail;
    NotCompressibleError = new_error(
        "l3ic_jax._fse.NotCompressibleError",
        "compress() result 0: coding would not save 2 bytes; store the input raw.",
        FSEError, "not_compressible", 0);
    if (NotCompressibleError == NULL) goto fail;
    SymbolRepetitionError = new_error(
        "l3ic_jax._fse.SymbolRepetitionError",
        "compress() result 1: the input is one byte value repeated; store the "
        "byte and the length (RLE).",
        FSEError, "rle", 1);
    if (SymbolRepetitionError == NULL) goto fail;
    Py_INCREF(FSEError);
    if (PyModule_AddObject(m, "FSEError", FSEError) < 0) goto fail;
    Py_INCREF(NotCompressibleError);
    if (PyModule_AddObject(m, "NotCompressibleError", NotCompressibleError) < 0) goto fail;
    Py_INCREF(SymbolRepetitionError);
    if (PyModule_AddObject(m, "SymbolRepetitionError", SymbolRepetitionError) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "NOT_COMPRESSIBLE", 0) < 0 ||
        PyModule_AddIntConstant(m, "RLE", 1) < 0 ||
        PyModule_AddIntConstant(m, "MAX_TABLELOG", L3FSE_MAX_TABLELOG) < 0 ||
        PyModule_AddIntConstant(m, "MIN_TABLELOG", L3FSE_MIN_TABLELOG) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
